# A sweep trains a grid's trials within the run's time limit (stop_after). Its summary says
# whether every trial finished: only then is its results table collected and the report built.
# A sweep that stopped at the limit ends the run (status 0); the next run continues it (its
# summary names the stop, which the sweep's params read: stop_to_continue).
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
        continues=stop_to_continue,
    shell:
        step(
            "python -m pipeline.sweep --grid {input.grid:q} --out {params.results:q} --data {params.processed:q}"
            " --settings {params.settings:q} --cores {threads} --continues={params.continues:q}"
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


if workflow.is_main_process:
    logging.getLogger("snakemake.logging").addFilter(QUIET_STOP)


onsuccess:
    if stopped_sweeps():
        print(
            f"stopped at the time limit ({', '.join(stopped_sweeps())}); rerun to continue",
            file=sys.stderr,
        )


# A target that needs a stopped sweep's table (snakemake results/table2.parquet) cannot be made in
# this run: that is the stop the user asked for, not a failure. It ends as the stop does with the
# default target: its line last, status 0, and none of Snakemake's error messages (QUIET_STOP).
onerror:
    if QUIET_STOP.only_stops():
        print(
            f"stopped at the time limit ({', '.join(stopped_sweeps())}); rerun to continue",
            file=sys.stderr,
        )
        sys.exit(0)
