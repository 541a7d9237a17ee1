rule fetch:
    output:
        f"{RAW}/{{dataset}}/VERIFIED.json",
    log:
        "logs/fetch/{dataset}.log",
    conda:
        ENV
    params:
        raw=lambda wildcards, output: parent(output[0], 2),
    shell:
        step("python -m pipeline.fetch {wildcards.dataset:q} --raw {params.raw:q}")


rule prepare:
    input:
        f"{RAW}/{{dataset}}/VERIFIED.json",
    output:
        f"{PROCESSED}/{{dataset}}/manifest.json",
    log:
        "logs/prepare/{dataset}.log",
    conda:
        ENV
    params:
        raw=lambda wildcards, input: parent(input[0], 2),
        processed=lambda wildcards, output: parent(output[0], 2),
    shell:
        step(
            "python -m pipeline.prepare {wildcards.dataset:q} --raw {params.raw:q} --out {params.processed:q}"
        )
