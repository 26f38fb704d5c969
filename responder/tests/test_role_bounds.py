"""The Ansible role's bounds and choices are the responder's (no processes, no PKI).

The responder's ``config`` module holds every numeric range, choice list and name
pattern by TOML key path (``RANGES``, ``CHOICES``, ``PATTERNS``). The role
(``roles/ocsp_responder``) restates some of them: ``choices`` in
``meta/argument_specs.yml``, the bounds of the checks it runs before any CA signs
(``vars/main.yml``), and the defaults it writes into config.toml
(``defaults/main.yml``, whose values argument_specs documents). These tests fail
when one of them drifts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocsp_responder import config

ROLE = Path(__file__).resolve().parents[2] / "roles" / "ocsp_responder"

#: Role variable (``ocsp_responder_issuers.KEY`` for an issuer key) -> the TOML key
#: path it is written to by templates/config.toml.j2.
CONFIG_KEYS: dict[str, str] = {
    "ocsp_responder_workers": "server.workers",
    "ocsp_responder_max_live_signings": "server.max_live_signings",
    "ocsp_responder_max_request_size": "server.max_request_size",
    "ocsp_responder_http_cache_max_age": "server.http_cache_max_age",
    "ocsp_responder_refresh_fraction": "server.refresh_fraction",
    "ocsp_responder_cache_size": "server.cache_size",
    "ocsp_responder_cache_bytes": "server.cache_bytes",
    "ocsp_responder_reload_interval": "server.reload_interval",
    "ocsp_responder_log_level": "server.log_level",
    "ocsp_responder_max_data_age": "server.max_data_age",
    "ocsp_responder_data_expiry_grace": "server.data_expiry_grace",
    "ocsp_responder_data_expiry_warning": "server.data_expiry_warning",
    "ocsp_responder_response_validity": "issuer.response_validity",
    "ocsp_responder_responder_id": "issuer.responder_id",
    "ocsp_responder_signature_hash": "issuer.signature_hash",
    "ocsp_responder_crl_fetch_interval": "issuer.source.fetch_interval",
    "ocsp_responder_crl_fetch_timeout": "issuer.source.fetch_timeout",
    "ocsp_responder_crl_fetch_max_bytes": "issuer.source.fetch_max_bytes",
    "ocsp_responder_issuers.name": "issuer.name",
    "ocsp_responder_issuers.status_source": "issuer.source.kind",
    "ocsp_responder_issuers.response_validity": "issuer.response_validity",
    "ocsp_responder_issuers.responder_id": "issuer.responder_id",
    "ocsp_responder_issuers.signature_hash": "issuer.signature_hash",
    "ocsp_responder_issuers.max_data_age": "issuer.max_data_age",
    "ocsp_responder_issuers.data_expiry_grace": "issuer.data_expiry_grace",
    "ocsp_responder_issuers.crl_fetch_interval": "issuer.source.fetch_interval",
}

#: Written in other units: role variable -> (TOML key path, factor to its unit).
SCALED_KEYS: dict[str, tuple[str, int]] = {
    "ocsp_responder_signer_renew_days": ("server.signer_expiry_warning", 86400),
}

#: argument_specs ``choices`` of the role's own settings (no responder key).
ROLE_CHOICES = {
    "ocsp_responder_install_mode",
    "ocsp_responder_signer_key_type",
    "ocsp_responder_signer_ec_curve",
    "ocsp_responder_signer_rsa_bits",
    "ocsp_responder_signer_digest",
    "ocsp_responder_nginx_log_client_address",
    "ocsp_responder_issuers.ca_type",
}


def load(relative: str) -> Any:
    return yaml.safe_load((ROLE / relative).read_text(encoding="utf-8"))


def options() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, spec) of every argument_specs option, issuer keys as ``VAR.KEY``."""

    def walk(specs: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, spec in specs.items():
            yield prefix + name, spec
            yield from walk(spec.get("options", {}), f"{prefix}{name}.")

    yield from walk(load("meta/argument_specs.yml")["argument_specs"]["main"]["options"], "")


def test_every_mapped_key_exists_in_the_responder() -> None:
    known = set(config.RANGES) | set(config.CHOICES) | set(config.PATTERNS)
    keys = set(CONFIG_KEYS.values()) | {key for key, _ in SCALED_KEYS.values()}
    assert keys <= known, sorted(keys - known)
    names = {name for name, _ in options()}
    assert set(CONFIG_KEYS) | set(SCALED_KEYS) | ROLE_CHOICES <= names, sorted(
        (set(CONFIG_KEYS) | set(SCALED_KEYS) | ROLE_CHOICES) - names
    )


def test_mapping_follows_the_config_template() -> None:
    """Every ``key = {{ ocsp_responder_VAR ...`` line of config.toml.j2 is in CONFIG_KEYS."""
    tables = {"[server]": "server", "[[issuer]]": "issuer", "[issuer.source]": "issuer.source"}
    table = ""
    seen = {}
    for line in (ROLE / "templates" / "config.toml.j2").read_text().splitlines():
        table = tables.get(line.strip(), table)
        match = re.match(r"(\w+) = \{\{ \(?(ocsp_responder_\w+|issuer\.\w+)", line)
        if match and table:
            variable = match[2].replace("issuer.", "ocsp_responder_issuers.")
            seen[variable] = f"{table}.{match[1]}"
    mapped = {
        variable: key
        for variable, key in seen.items()
        if key in config.RANGES or key in config.CHOICES or key in config.PATTERNS
    }
    assert mapped, "no bounded key found in config.toml.j2"
    for variable, key in mapped.items():
        if variable in SCALED_KEYS:
            assert SCALED_KEYS[variable][0] == key
        else:
            assert CONFIG_KEYS.get(variable) == key, (variable, key)


def test_argument_specs_choices_are_the_responders() -> None:
    with_choices = {name: spec["choices"] for name, spec in options() if "choices" in spec}
    for name, choices in with_choices.items():
        if name in ROLE_CHOICES:
            continue
        assert name in CONFIG_KEYS, f"{name}: choices of no known responder key"
        key = CONFIG_KEYS[name]
        assert key in config.CHOICES, f"{name}: {key} has no choices in the responder"
        assert len(choices) == len(set(choices)), f"{name}: {choices}"
        assert set(choices) == set(config.CHOICES[key]), (
            f"{name}: argument_specs choices {choices} != responder {key} {config.CHOICES[key]}"
        )
    for name, key in CONFIG_KEYS.items():
        if key in config.CHOICES:
            assert name in with_choices, f"{name}: no choices in argument_specs ({key})"


def test_vars_bounds_are_the_responders() -> None:
    role_vars = load("vars/main.yml")
    ranges = role_vars["__ocsp_responder_ranges"]
    assert ranges
    for key, bound in ranges.items():
        assert key in config.RANGES, f"vars/main.yml: {key} is no responder range"
        expected = config.RANGES[key]
        assert not expected.low_excluded, f"{key}: the role's checks include low"
        assert (bound["low"], bound["high"]) == (expected.low, expected.high), (
            f"vars/main.yml {key}: {bound} != responder {expected}"
        )
    # Every issuer setting is checked before any CA signs (tasks/validate.yml).
    issuer_ranges = {key for key in config.RANGES if key.startswith("issuer.")}
    assert issuer_ranges <= set(ranges), sorted(issuer_ranges - set(ranges))
    patterns = role_vars["__ocsp_responder_patterns"]
    assert set(patterns) == set(config.PATTERNS), sorted(set(patterns) ^ set(config.PATTERNS))
    for key, pattern in patterns.items():
        assert pattern == config.PATTERNS[key].pattern, (key, pattern)


def check_value(key: str, value: Any) -> str | None:
    """The responder's problem with ``value`` for ``key``, or None."""
    if key in config.RANGES:
        return config.RANGES[key].check(value)
    if key in config.CHOICES and value not in config.CHOICES[key]:
        return f"not one of {config.CHOICES[key]}"
    if key in config.PATTERNS and not config.PATTERNS[key].match(value):
        return config.PATTERN_RULES[key]
    return None


@pytest.mark.parametrize(
    "variable", sorted(name for name in set(CONFIG_KEYS) | set(SCALED_KEYS) if "." not in name)
)
def test_defaults_are_within_the_responders_bounds(variable: str) -> None:
    defaults = load("defaults/main.yml")
    specs = dict(options())
    values = [("defaults/main.yml", defaults[variable])] if variable in defaults else []
    if "default" in specs[variable]:
        values.append(("meta/argument_specs.yml", specs[variable]["default"]))
    if not values:
        pytest.skip(f"{variable} has no default")
    key, factor = SCALED_KEYS.get(variable, (CONFIG_KEYS.get(variable, ""), 1))
    for where, value in values:
        if isinstance(value, str) and "{{" in value:
            continue  # a template: follows another variable
        scaled = value * factor if isinstance(value, int | float) and factor != 1 else value
        problem = check_value(key, scaled)
        assert problem is None, f"{where}: {variable} = {value!r}: {key} {problem}"


def test_argument_specs_defaults_are_the_role_defaults() -> None:
    """meta/argument_specs.yml documents the defaults of defaults/main.yml, not others."""
    defaults = load("defaults/main.yml")
    specs = dict(options())
    assert set(defaults) <= set(specs), sorted(set(defaults) - set(specs))
    drift = {
        name: (spec["default"], defaults[name])
        for name, spec in specs.items()
        if name in defaults and "default" in spec and spec["default"] != defaults[name]
    }
    assert not drift, drift
