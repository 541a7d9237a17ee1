rule sweep:
    input:
        grid=f"{config['grids']}/{{grid}}.yaml",
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
        settings=sweep_settings,
    shell:
        "python -m pipeline.sweep --grid {input.grid} --out {params.results} --data {params.processed}"
        " --settings '{params.settings}' 2>&1 | tee {log}"
