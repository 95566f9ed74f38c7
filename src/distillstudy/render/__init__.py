"""The report's words and pictures: `page.render_page` assembles the HTML from `tables`
(per-dataset sections), `designs` (study-design sections), `figures` / `design_figures`
(PNGs) and `captions`; `text` spells numbers, `plots` makes the DVC plot table."""
