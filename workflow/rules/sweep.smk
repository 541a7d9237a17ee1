# A sweep trains a grid's trials within the run's time limit (stop_after). Its summary says
# whether every trial finished: only then is its results table collected and the report built.
# A sweep that stopped at the limit ends the run (status 0); the next run continues it.
checkpoint sweep:
    input:
        grid=grid_file,
        data=grid_data,
    output:
        f"{RESULTS}/{{grid}}/sweep.json",
    log:
        "logs/sweep/{grid}.log",
    conda:
        ENV
    threads: sweep_threads
    params:
        results=lambda wildcards, output: parent(output[0], 2),
        processed=lambda wildcards, input: parent(input.data, 2),
        settings=SWEEP_SETTINGS,
    shell:
        step(
            "python -m pipeline.sweep --grid {input.grid:q} --out {params.results:q} --data {params.processed:q}"
            " --settings {params.settings:q} --cores {threads}"
        )


rule results:
    input:
        f"{RESULTS}/{{grid}}/sweep.json",
    output:
        f"{RESULTS}/{{grid}}.parquet",
    log:
        "logs/results/{grid}.log",
    conda:
        ENV
    shell:
        step("python -m pipeline.results --sweep {input:q} --out {output:q}")


onsuccess:
    if stopped_sweeps():
        print(
            f"stopped at the time limit ({', '.join(stopped_sweeps())}); rerun to continue",
            file=sys.stderr,
        )
