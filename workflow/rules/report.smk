rule table:
    input:
        results=f"{RESULTS}/{{grid}}.parquet",
        grid=grid_file,
        paper=config["paper_results"],
        reference=reference_of,
    output:
        multiext(f"{REPORTS}/tables/{{grid}}", ".md", ".csv", ".tex"),
    log:
        "logs/table/{grid}.log",
    conda:
        ENV
    params:
        reference=reference_root,
        out=lambda wildcards, output: parent(output[0]),
    shell:
        step(
            "python -m pipeline.report.tables --results {input.results:q} --grid {input.grid:q}"
            " --paper {input.paper:q} --reference {params.reference:q} --out {params.out:q}"
        )


rule grid_figure:
    input:
        results=f"{RESULTS}/{{grid}}.parquet",
        paper=config["paper_results"],
        reference=reference_of,
    output:
        report(
            f"{REPORTS}/figures/{{grid}}.png",
            category="Figures",
            caption="../report/figure.rst",
        ),
        f"{REPORTS}/figures/{{grid}}.pdf",
    log:
        "logs/figures/{grid}.log",
    conda:
        ENV
    params:
        reference=reference_root,
        out=lambda wildcards, output: parent(output[0]),
    shell:
        step(
            "python -m pipeline.report.figures --results {input.results:q} --out {params.out:q} --summary"
            " --reference {params.reference:q} --paper {input.paper:q}"
        )


rule paper_figure:
    input:
        results=lambda wc: f"{RESULTS}/{FIGURE_GRID[wc.fig]}.parquet",
        data=lambda wc: f"{PROCESSED}/{GRIDS[FIGURE_GRID[wc.fig]].experiment}/manifest.json",
    output:
        report(
            f"{REPORTS}/figures/{{fig}}.png",
            category="Figures",
            caption="../report/figure.rst",
        ),
        f"{REPORTS}/figures/{{fig}}.pdf",
    log:
        "logs/figures/{fig}.log",
    conda:
        ENV
    params:
        out=lambda wildcards, output: parent(output[0]),
        processed=lambda wildcards, input: parent(input.data, 2),
    shell:
        step(
            "python -m pipeline.report.figures --results {input.results:q} --data {params.processed:q}"
            " --out {params.out:q} --figures {wildcards.fig:q}"
        )


rule learning_curves:
    input:
        results=expand(f"{RESULTS}/{{grid}}.parquet", grid=GRIDS),
        grids=list(GRID_FILES.values()),
        paper=config["paper_results"],
        protocol=PROTOCOL,
        reference=[p for g in GRIDS for p in reference_of(SimpleNamespace(grid=g))],
    output:
        report(
            f"{REPORTS}/figures/learning_curves.png",
            category="Figures",
            caption="../report/curves.rst",
        ),
        f"{REPORTS}/figures/learning_curves.pdf",
    log:
        "logs/figures/learning_curves.log",
    conda:
        ENV
    params:
        reference=reference_root,
        out=lambda wildcards, output: parent(output[0]),
    shell:
        "python -m pipeline.report.curves --results {input.results:q} --grids {input.grids:q} --paper {input.paper:q}"
        " --protocol {input.protocol:q} --reference {params.reference:q} --out {params.out:q} 2>&1 | tee {log:q}"


rule report:
    input:
        results=expand(f"{RESULTS}/{{grid}}.parquet", grid=GRIDS),
        grids=list(GRID_FILES.values()),
        reference=[p for g in GRIDS for p in reference_of(SimpleNamespace(grid=g))],
        tables=expand(f"{REPORTS}/tables/{{grid}}.md", grid=GRIDS),
        figures=expand(
            f"{REPORTS}/figures/{{name}}.png",
            name=[*GRIDS, *FIGURE_GRID, "learning_curves"],
        ),
        paper=config["paper_results"],
        data=expand(
            f"{PROCESSED}/{{exp}}/manifest.json",
            exp=sorted({g.experiment for g in GRIDS.values()}),
        ),
    output:
        report(
            f"{REPORTS}/index.html", category="Report", caption="../report/index.rst"
        ),
    log:
        "logs/report.log",
    conda:
        ENV
    params:
        reference=reference_root,
        processed=lambda wildcards, input: parent(input.data[0], 2),
        figures=lambda wildcards, input: parent(input.figures[0]),
        tables=lambda wildcards, input: parent(input.tables[0]),
        tracking=TRACKING_URI,
    shell:
        step(
            "python -m pipeline.report.html --results {input.results:q} --grids {input.grids:q} --data {params.processed:q}"
            " --figures {params.figures:q} --tables {params.tables:q} --paper {input.paper:q} --reference {params.reference:q}"
            " --tracking-uri={params.tracking:q} --out {output:q}"
        )
