rule sweep:
    input:
        grid=grid_file,
        data=grid_data,
    output:
        f"{RESULTS}/{{grid}}.parquet",
    log:
        "logs/sweep/{grid}.log",
    conda:
        ENV
    threads: workflow.cores
    params:
        results=lambda wildcards, output: parent(output[0]),
        processed=lambda wildcards, input: parent(input.data, 2),
        settings=SWEEP_SETTINGS,
    shell:
        step(
            "python -m pipeline.sweep --grid {input.grid:q} --out {params.results:q} --data {params.processed:q}"
            " --settings {params.settings:q} --cores {threads}"
        )
