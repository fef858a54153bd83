"""ConfigManager: defaults, templates, files, discovery, validation messages and merging."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from bioxen_flows.config import ConfigFileError, ConfigManager, VMConfig
from bioxen_flows.organisms.profiles import get_supported_biological_types

ORGANISMS = get_supported_biological_types()
XCPNG = {
    "url": "https://xcpng.example.org",
    "username": "root",
    "template": "bioxen-guest",
    "ssh_user": "bioxen",
    "ssh_key_path": "~/.ssh/id_ed25519",
    "ssh_host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0d",
}


@pytest.fixture
def manager() -> ConfigManager:
    return ConfigManager()


def _errors(manager: ConfigManager, config: dict, vm_type: str = "basic") -> list[str]:
    ok, errors = manager.validate_config(config, vm_type, "ecoli")
    assert not ok and errors
    return errors


@pytest.mark.parametrize("organism", ORGANISMS)
def test_defaults_validate(manager: ConfigManager, organism: str) -> None:
    config = manager.load_defaults(organism)
    assert config["biological_type"] == organism
    assert manager.validate_config(config, "basic", organism) == (True, [])


def test_defaults_are_uncapped_and_reject_unknown(manager: ConfigManager) -> None:
    # caps are opt-in: a default VM takes nothing from the host budget
    assert manager.load_defaults("syn3a")["resources"] == {}
    assert manager.load_defaults("ecoli")["simulation"]["stochastic"] is False
    with pytest.raises(ValueError, match="syn3a"):
        manager.load_defaults("yeast")


@pytest.mark.parametrize("vm_type", ["basic", "xcpng"])
@pytest.mark.parametrize("organism", ORGANISMS)
def test_templates_validate_without_password(
    manager: ConfigManager, organism: str, vm_type: str
) -> None:
    config = manager.generate_template_config(organism, vm_type)
    assert manager.validate_config(config, vm_type, organism) == (True, [])
    assert config["vm_type"] == vm_type
    assert ("xcpng_config" in config) == (vm_type == "xcpng")
    assert "password" not in json.dumps(config).replace("password_env", "")


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_save_load_round_trip(manager: ConfigManager, tmp_path: Path, suffix: str) -> None:
    config = manager.generate_template_config("syn3a", "xcpng")
    path = manager.save_to_file(config, tmp_path / "sub" / f"cfg{suffix}")
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    text = path.read_text()
    parsed = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    assert parsed == config
    assert manager.load_from_file(path) == config


def test_save_format_argument_and_password_refused(manager: ConfigManager, tmp_path: Path) -> None:
    config = manager.load_defaults("ecoli")
    path = manager.save_to_file(config, tmp_path / "cfg.conf", format="yaml")
    assert yaml.safe_load(path.read_text()) == config
    bad = manager.merge_configs(config, {"xcpng_config": {**XCPNG, "password": "hunter2"}})
    with pytest.raises(ValueError, match="password"):
        manager.save_to_file(bad, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
    with pytest.raises(ValueError, match="format"):
        manager.save_to_file(config, tmp_path / "cfg.txt")


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    (home / ".bioxen").mkdir(parents=True)
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    manager = ConfigManager()
    assert manager.search_paths[0] == cwd / "bioxen_config.json"
    assert Path("/etc/bioxen/config.yml") in manager.search_paths

    manager.save_to_file(manager.load_defaults("ecoli"), home / ".bioxen" / "config.yaml")
    assert manager.load_from_file()["biological_type"] == "ecoli"
    manager.save_to_file(manager.load_defaults("syn3a"), cwd / "bioxen_config.yml")
    assert manager.load_from_file()["biological_type"] == "syn3a"

    first, second = tmp_path / "a.json", tmp_path / "b.yaml"
    custom = ConfigManager(search_paths=[first, second])
    manager.save_to_file(manager.load_defaults("minimal_cell"), second)
    assert custom.load_from_file()["biological_type"] == "minimal_cell"
    manager.save_to_file(manager.load_defaults("ecoli"), first)
    assert custom.load_from_file()["biological_type"] == "ecoli"


def test_nothing_found_lists_searched_paths(tmp_path: Path) -> None:
    missing = [tmp_path / "x.json", tmp_path / "y.yaml"]
    with pytest.raises(ValueError, match="searched") as info:
        ConfigManager(search_paths=missing).load_from_file()
    assert str(missing[0]) in str(info.value) and str(missing[1]) in str(info.value)


def test_malformed_json_names_file_and_line(manager: ConfigManager, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "vm_type": "basic",\n  "packages": [,]\n}\n')
    with pytest.raises(ConfigFileError) as info:
        manager.load_from_file(path)
    assert str(info.value).startswith(f"{path}:3:")


def test_malformed_yaml_names_file_and_line(manager: ConfigManager, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("vm_type: basic\nresources:\n  atp_percent: [1, 2\n")
    with pytest.raises(ConfigFileError) as info:
        manager.load_from_file(path)
    assert str(info.value).startswith(f"{path}:4:")  # unclosed list detected at end of file
    path.write_text("vm_type: basic\nresources:\n\tatp_percent: 5\n")
    with pytest.raises(ConfigFileError, match=r"bad\.yaml:3:"):
        manager.load_from_file(path)


def test_file_top_level_and_schema_errors(manager: ConfigManager, tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigFileError, match="mapping"):
        manager.load_from_file(path)
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"resources": {"ribosomes": 0}}))
    with pytest.raises(ConfigFileError, match=r"schema\.json: resources\.ribosomes"):
        manager.load_from_file(path)


@pytest.mark.parametrize(
    ("config", "vm_type", "expected"),
    [
        ({"resources": {"atp_percent": 150}}, "basic",
         "resources.atp_percent: Input should be less than or equal to 100"),
        ({"resources": {"ribosomes": 0}}, "basic",
         "resources.ribosomes: Input should be greater than or equal to 1"),
        ({"resourcez": {}}, "basic", "resourcez: Extra inputs are not permitted"),
        ({}, "xcpng", "xcpng_config: required when vm_type is 'xcpng'"),
        ({"xcpng_config": {**XCPNG, "url": "ftp://host"}}, "xcpng", "xcpng_config.url: must be"),
        ({"xcpng_config": {**XCPNG, "password": "x"}}, "xcpng", "xcpng_config: password must not"),
        ({"simulation": {"stochastic": True}}, "basic", "simulation: seed is required"),
        ({"xcpng_config": {k: v for k, v in XCPNG.items() if k != "ssh_host_key"}}, "xcpng",
         "xcpng_config: ssh_host_key or known_hosts_path is required"),
        ({"xcpng_config": {**XCPNG, "ssh_host_key": "ssh-ed25519 nope"}}, "xcpng",
         "xcpng_config.ssh_host_key: must be"),
        ({"vm_type": "xcpng", "xcpng_config": XCPNG}, "basic", "vm_type: config says 'xcpng'"),
        ({"biological_type": "syn3a"}, "basic", "biological_type: config says 'syn3a'"),
        ({"packages": "lacZ"}, "basic", "packages: Input should be a valid list"),
    ],
)
def test_validation_errors_name_field_and_rule(
    manager: ConfigManager, config: dict, vm_type: str, expected: str
) -> None:
    errors = _errors(manager, config, vm_type)
    assert any(e.startswith(expected) for e in errors), errors


def test_password_error_points_to_env_or_secret(manager: ConfigManager) -> None:
    (error,) = _errors(manager, {"xcpng_config": {**XCPNG, "password": "x"}}, "xcpng")
    assert "environment variable" in error and "Prefect Secret" in error


def test_validation_of_arguments(manager: ConfigManager) -> None:
    ok, errors = manager.validate_config({}, "kvm", "yeast")
    assert not ok
    assert any(e.startswith("vm_type: must be one of basic, xcpng") for e in errors)
    assert any(e.startswith("biological_type: must be one of") and "ecoli" in e for e in errors)
    assert manager.validate_config({"xcpng_config": XCPNG}, "xcpng", "ecoli") == (True, [])
    fingerprint = {**XCPNG, "ssh_host_key": "SHA256:" + "A" * 43}
    assert manager.validate_config({"xcpng_config": fingerprint}, "xcpng", "ecoli") == (True, [])


def test_merge_configs_deep_and_immutable(manager: ConfigManager) -> None:
    base = {"resources": {"atp_percent": 50.0, "ribosomes": 100}, "packages": ["a"], "x": [1]}
    override = {"resources": {"ribosomes": 200}, "packages": ["c"], "simulation": {"seed": 1}}
    base_before, override_before = copy.deepcopy(base), copy.deepcopy(override)
    merged = manager.merge_configs(base, override)
    assert merged == {
        "resources": {"atp_percent": 50.0, "ribosomes": 200},
        "packages": ["c"],
        "x": [1],
        "simulation": {"seed": 1},
    }
    assert base == base_before and override == override_before
    merged["resources"]["atp_percent"] = 1.0
    merged["simulation"]["seed"] = 2
    merged["x"].append(2)
    assert base["x"] == [1]
    assert base["resources"]["atp_percent"] == 50.0 and override["simulation"]["seed"] == 1


def test_vmconfig_exported_and_strict() -> None:
    assert VMConfig().vm_type == "basic"
    with pytest.raises(ValueError):
        VMConfig.model_validate({"resources": {"ribosomes": True}})
