# Data acquisition (paper scale): one rule per resource of the fetch manifest (optima/data/manifest.yaml),
# each a thin `optima fetch --resource NAME`. Outputs are the files the config's data.official paths name
# (downloaded with HTTP Range resume, checksum-verified, unpacked, renamed into place only when complete).
# Manual resources (request forms: Flickr30k, NLVR2 images) output a verification record next to the
# folder, never the folder itself: Snakemake deletes a job's outputs before running it.
#
# `prepare` depends on these outputs only when data.source is official (common.smk: official_inputs).
# The rules run on the submitting host (localrules): compute nodes of many clusters have no network.
# OPTIMA_FETCH_MIRROR / OPTIMA_FETCH_MANIFEST (optima/data/fetch.py) point them at a mirror or another manifest.


def _fetch_rule_input(resource):
    def _inputs(wildcards):
        if "manual" not in FETCH_MANIFEST["resources"][resource] or config["data"]["source"] != "official":
            return []
        return fetch_manual_inputs(FETCH_MANIFEST, config, resource)

    return _inputs


for _resource, _spec in FETCH_MANIFEST["resources"].items():

    rule:
        name:
            f"fetch_{_resource}"
        input:
            _fetch_rule_input(_resource),
        output:
            **{
                key: (directory(path) if fetch_output_is_dir(_spec, path) else path)
                for key, path in fetch_rule_outputs(_spec).items()
            },
        log:
            f"{LOGS}/fetch/{_resource}.log",
        params:
            config=config_args,
            resource=_resource,
        localrule: True
        priority: 10 if "manual" in _spec else 0  # a missing manual folder fails before the big downloads
        threads: 1
        resources:
            mem_mb=2000,
            runtime=1440,
        conda:
            "../../environment.yml"
        shell:
            "optima fetch all {params.config} --resource {params.resource} > {log:q} 2>&1"
