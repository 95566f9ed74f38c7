# One job per study-design variant that needs its own transfer set (src/distillstudy/
# grid.py): a converged teacher (in_sample), K fold teachers (cross_fitted), augmented
# copies labelled by the reference teacher (augmented), a teacher of another width, an
# ensemble, a labelled subset, or a bootstrap resample with its refitted teacher (the
# variance design), or born-again generation 1's (the teacher's architecture; later
# generations read the previous generation's cell in their distill jobs). The reference
# grid needs none of these.
rule transfer:
    input:
        data="data/prepared/{dataset}.npz",
        meta="data/prepared/{dataset}.json",
        teacher_model="models/teachers/{dataset}.pt",
        teacher_logits="models/teachers/{dataset}.logits.npz",
        code=stage_code("transfer"),
        factory=teacher_files,
    output:
        set="models/transfer/{dataset}/{design}.npz",
        model="models/transfer/{dataset}/{design}.pt",
        meta="models/transfer/{dataset}/{design}.json",
    params:
        seed=config["seed"],
        args=transfer_args,
        teacher=teacher_args,
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/transfer/{dataset}/{design}.log",
    benchmark:
        "logs/benchmarks/transfer/{dataset}/{design}.tsv"
    threads: 1
    # Teachers first: every student of a variant waits for its transfer set.
    priority: 1000
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "distillstudy transfer --data {input.data} --meta {input.meta}"
        " --teacher-model {input.teacher_model} --teacher-logits {input.teacher_logits}"
        " --dataset {wildcards.dataset} --variant {wildcards.design} --seed {params.seed}"
        " {params.args} {params.teacher} --threads {threads}"
        " --out-set {output.set} --out-model {output.model} --out-meta {output.meta} > {log} 2>&1"
