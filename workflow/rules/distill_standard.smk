# The standard engine's cells (src/distillstudy/engine/standard.py): one job per (cell,
# replicate), so the replicates spread over cores, GPUs and cluster nodes, then one job that
# gathers them into the cell's file, the one every engine writes (evaluate reads it as any
# other). Reference grid only: the study designs run on the stacked engines. Each replicate
# job writes a checkpoint every epoch under .checkpoints/ (outside the DVC outputs): killed,
# then started again (snakemake --rerun-incomplete), it resumes from the last finished epoch
# and ends with the files an uninterrupted run writes; the checkpoint is removed at the end.


rule distill_replicate:
    input:
        unpack(online_teacher),
        data="data/prepared/{dataset}.npz",
        targets="models/teachers/{dataset}.logits.npz",
        code=stage_code("distill"),
        factory=student_code,
    output:
        model="models/students/{dataset}/{student}/{cell}/seed{replicate}.pt",
        logits="models/students/{dataset}/{student}/{cell}/seed{replicate}.logits.npz",
    wildcard_constraints:
        student=STANDARD_STUDENT_PATTERN,
        replicate=r"[0-9]+",
    params:
        family=lambda w: shlex.quote(student_family(w)["family"]),
        size=lambda w: parse_student(w.student)[1],
        teacher=online_teacher_args,
        standard=lambda w: standard_options("distill"),
        seeds=config["distill"]["seeds"],
        seed=config["seed"],
        checkpoint=lambda w: f"{CHECKPOINTS}/distill/{w.dataset}/{w.student}/{w.cell}/seed{w.replicate}.pt",
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/distill/{dataset}/{student}/{cell}/seed{replicate}.log",
    benchmark:
        "logs/benchmarks/distill/{dataset}/{student}/{cell}/seed{replicate}.tsv"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=600,
    shell:
        "distillstudy distill --replicate {wildcards.replicate} --data {input.data} --teacher-logits {input.targets}"
        " --dataset {wildcards.dataset} --family {params.family} --size {params.size} --cell {wildcards.cell}"
        " --seeds {params.seeds} --seed {params.seed} {params.standard} {params.teacher}"
        " --checkpoint {params.checkpoint} --threads {threads}"
        " --out-model {output.model} --out-logits {output.logits} > {log} 2>&1"


rule distill_gather:
    input:
        unpack(replicate_files),
        code=stage_code("distill"),
    output:
        model="models/students/{dataset}/{student}/{cell}.pt",
        logits="models/students/{dataset}/{student}/{cell}.logits.npz",
    wildcard_constraints:
        student=STANDARD_STUDENT_PATTERN,
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/distill/{dataset}/{student}/{cell}.log",
    benchmark:
        "logs/benchmarks/distill/{dataset}/{student}/{cell}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "distillstudy distill --gather {input.logits} --out-model {output.model} --out-logits {output.logits}"
        " > {log} 2>&1"
