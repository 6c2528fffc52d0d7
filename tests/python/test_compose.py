"""The compose stack, checked without Docker (no engine runs here): the file parses, every
service's build context, mounted folders and setup script exist, and the services the stack
promises are there. Where the `docker compose` plugin exists, `docker compose config` is run too."""

import json
import shutil
import subprocess

import yaml

from conftest import ROOT


def test_compose_file_is_consistent_with_the_repository():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "minio", "minio-setup", "generator", "demo", "flight-sql"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "healthcheck" in services["minio"]
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            assert (context / "Dockerfile").exists(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, source)
    assert (ROOT / "minio" / "setup.sh").exists()
    assert (ROOT / "minio" / "lake-policy.json").exists()
    # The generator and the demo run subcommands that exist.
    assert services["generator"]["command"][0] == "generate"
    assert services["demo"]["command"][0] == "demo"
    assert services["flight-sql"]["command"][0] == "serve"

    # The three scoring jobs run the shipped specs with their metrics on 9464, which is what
    # Prometheus scrapes; Grafana is provisioned with the dashboard.
    jobs = {"score-transactions": "transactions", "score-claims": "claims", "score-telemetry": "telemetry"}
    for name, spec in jobs.items():
        command = services[name]["command"]
        assert command[:2] == ["run", f"jobs/specs/{spec}.toml"], name
        assert (ROOT / command[1]).exists()
        assert command[command.index("--metrics-addr") + 1] == "0.0.0.0:9464"
        assert services[name]["environment"]["RISKSTREAM_LAKE"].startswith("s3://lake/")
    prometheus = yaml.safe_load((ROOT / "config" / "prometheus.yml").read_text())
    scrape = prometheus["scrape_configs"][0]
    assert scrape["honor_labels"] is True, "the samples' job label names the job"
    assert sorted(scrape["static_configs"][0]["targets"]) == sorted([f"{n}:9464" for n in jobs] + ["flight-sql:9465"])
    serve = services["flight-sql"]["command"]
    assert serve[serve.index("--metrics-addr") + 1] == "0.0.0.0:9465"
    assert {"prometheus", "grafana"} <= set(services)
    datasources = yaml.safe_load((ROOT / "config/grafana/provisioning/datasources/prometheus.yml").read_text())
    dashboard = json.loads((ROOT / "config/grafana/dashboards/riskstream.json").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]


def test_docker_compose_config_where_the_plugin_exists():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        # Checked above without the plugin; nothing more to run here.
        return
    proc = subprocess.run([docker, "compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
