rule teacher:
    input:
        data="data/prepared/{dataset}.npz",
        meta="data/prepared/{dataset}.json",
        user=teacher_files,
        code=stage_code("teacher"),
    output:
        model="models/teachers/{dataset}.pt",
        logits="models/teachers/{dataset}.logits.npz",
        meta="models/teachers/{dataset}.json",
    params:
        seed=config["seed"],
        max_epochs=config["teacher"]["max_epochs"],
        patience=config["teacher"]["patience"],
        batch_size=config["teacher"]["batch_size"],
        lr=config["teacher"]["lr"],
        weight_decay=config["teacher"]["weight_decay"],
        cnn_channels=config["teacher"]["cnn_channels"],
        mlp_width=config["teacher"]["mlp_width"],
        dropout=config["teacher"]["dropout"],
        factory=teacher_args,
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/teacher/{dataset}.log",
    benchmark:
        "logs/benchmarks/teacher/{dataset}.tsv"
    threads: 1
    # Teachers first: every student and transfer set of a dataset waits for its teacher.
    priority: 1000
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "distillstudy teacher --data {input.data} --meta {input.meta} --seed {params.seed}"
        " --max-epochs {params.max_epochs} --patience {params.patience}"
        " --batch-size {params.batch_size} --lr {params.lr} --weight-decay {params.weight_decay}"
        " --cnn-channels {params.cnn_channels} --mlp-width {params.mlp_width}"
        " --dropout {params.dropout} {params.factory} --threads {threads}"
        " --out-model {output.model} --out-logits {output.logits} --out-meta {output.meta}"
        " > {log} 2>&1"
