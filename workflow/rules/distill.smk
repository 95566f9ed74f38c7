# One job per grid cell (dataset x [variant x] student x cell, a student = family x size, a cell = objective setting x alpha;
# its name carries both, so adding a setting or an alpha runs only its cells); all seeds of a cell train in
# one process, stacked (src/distillstudy/engine/train.py). Why this granularity, measured:
# benchmarks/README.md. {variant} is "" for the reference grid and "<variant>/" for a
# study-design variant (src/distillstudy/grid.py), whose students learn from its
# transfer set (rule transfer) or, for an epochs variant, from the reference teacher; a
# consistent-teaching variant's jobs also run the reference teacher on each epoch's views.
rule distill:
    input:
        data="data/prepared/{dataset}.npz",
        targets=distill_targets,
        code=stage_code("distill"),
        factory=student_code,
        teacher_model=consistent_teacher,
        previous=previous_generation,
    output:
        model="models/students/{dataset}/{variant}{student}/{cell}.pt",
        logits="models/students/{dataset}/{variant}{student}/{cell}.logits.npz",
    wildcard_constraints:
        # The standard engine's students have their own rules (distill_standard.smk).
        student=STACKED_STUDENT_PATTERN,
    params:
        variant=variant_of,
        student=student_args,
        tune=tune_args,
        consistent=consistent_args,
        previous=previous_generation_args,
        targets_flag=distill_targets_flag,
        seeds=config["distill"]["seeds"],
        seed=config["seed"],
        epochs=distill_epochs,
        batch_size=optimiser("batch_size"),
        lr=optimiser("lr"),
        weight_decay=optimiser("weight_decay"),
    conda:
        "../envs/distillstudy.yaml"
    log:
        "logs/distill/{dataset}/{variant}{student}/{cell}.log",
    benchmark:
        "logs/benchmarks/distill/{dataset}/{variant}{student}/{cell}.tsv"
    # One thread per job, jobs in parallel: 2 threads in one job change the bits and stall
    # when the other core is busy. Recorded in each cell's record (runtime.threads).
    threads: 1
    # Wider students first: a job's cost grows with size^2, so the long jobs start early and
    # the short ones fill the cores at the end (no core idles behind one long job).
    priority: student_size
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "distillstudy distill --data {input.data} {params.targets_flag} {input.targets}"
        " --variant {params.variant}"
        " --dataset {wildcards.dataset} {params.student} --cell {wildcards.cell}"
        " --seeds {params.seeds} --seed {params.seed}"
        " --epochs {params.epochs} --batch-size {params.batch_size} --lr {params.lr}"
        " --weight-decay {params.weight_decay} {params.tune} {params.consistent} {params.previous}"
        " --threads {threads}"
        " --out-model {output.model} --out-logits {output.logits} > {log} 2>&1"
