"""The compose stack, checked without Docker (no engine runs here): the file parses, every
service's build context, mounted folders and setup script exist, and the services the stack
promises are there. Where the `docker compose` plugin exists, `docker compose config` is run too."""

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


def test_docker_compose_config_where_the_plugin_exists():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        # Checked above without the plugin; nothing more to run here.
        return
    proc = subprocess.run([docker, "compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
