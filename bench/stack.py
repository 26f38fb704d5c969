"""Ours, the server under test: the responder and nginx, as the role deploys them.

Configured the way the role deploys it: config.toml rendered from the role's own
template (roles/ocsp_responder/templates/config.toml.j2) with the role's defaults
(roles/ocsp_responder/defaults/main.yml), the issuer files laid out like
/etc/ocsp-responder/issuers/NAME/{ca.pem,signer.pem,signer.key}, and nginx running
the project's site template (templates/nginx.conf.j2) inside a main configuration
that mirrors Debian 12's /etc/nginx/nginx.conf. Both templates are rendered with
plain Jinja2; the role template's two Ansible filters (``to_json``, ``bool``) are
provided here with Ansible's meaning.

Differences from a deployment, on purpose: everything lives in a per-run temporary
directory; the responder reads the CA's index.txt directly (the role copies it to
/var/lib/ocsp-responder/NAME/ with the ``revocation_data`` tag: that publish step
is not part of what is measured); no systemd sandboxing; nginx listens on a
loopback port instead of :80. (The peer, ``openssl ocsp``, is in peer.py; what is
measured on ours beyond wrk points is in ours.py.)
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

import procs
from pki import Pki

ISSUER_NAME = "intermediate"


def _ansible_bool(value: object) -> bool:
    """Ansible's ``bool`` filter: yes/true/on/1 (any case) are true."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"yes", "true", "on", "1", "y", "t"}


def _env(search: Path) -> jinja2.Environment:
    """A strict plain-Jinja2 environment (undefined variables are errors)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(search)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - config files, not HTML
    )
    env.filters["to_json"] = json.dumps
    env.filters["bool"] = _ansible_bool
    return env


def role_defaults(repo: Path) -> dict[str, Any]:
    """The role's defaults with simple ``{{ var }}`` references resolved.

    Values whose templates need Ansible (lookups, facts, ``role_path``) stay as
    they are; the benchmark never uses them.

    Raises:
        FileNotFoundError: roles/ocsp_responder/defaults/main.yml is missing.
    """
    path = repo / "roles" / "ocsp_responder" / "defaults" / "main.yml"
    values: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    env = _env(repo)
    for _ in range(5):
        changed = False
        for key, value in values.items():
            if isinstance(value, str) and "{{" in value:
                try:
                    rendered = env.from_string(value).render(values)
                except (jinja2.TemplateError, TypeError):
                    continue
                if "{{" in rendered:  # refers to a value that needs Ansible
                    continue
                try:  # Ansible's native types: "60" -> 60
                    values[key] = yaml.safe_load(rendered) if rendered.strip() else rendered
                except yaml.YAMLError:
                    values[key] = rendered
                changed = True
        if not changed:
            break
    return values


def missing(repo: Path, venv: Path) -> list[Path]:
    """What ours needs to run and is not there: the responder, the two templates."""
    return [
        p
        for p in (
            venv / "bin" / "ocsp-responder",
            repo / "templates" / "nginx.conf.j2",
            repo / "roles" / "ocsp_responder" / "templates" / "config.toml.j2",
        )
        if not p.exists()
    ]


def write_config(repo: Path, pki: Pki, signer: str, etc: Path, *, bind: str, workers: int) -> Path:
    """Lay out the issuer files and render config.toml from the role's template.

    Args:
        repo: the project checkout (holds roles/ and templates/).
        pki: the run's PKI (its intermediate's index.txt is the status source).
        signer: ``rsa`` or ``ec``.
        etc: directory playing /etc/ocsp-responder.
        bind: HOST:PORT for the responder.
        workers: the responder's worker processes.

    Returns:
        the config file.

    Raises:
        jinja2.TemplateError: the role's template does not render with these variables
            (the message names the template and the variable).
    """
    issuer_dir = etc / "issuers" / ISSUER_NAME
    issuer_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pki.issuer_cert, issuer_dir / "ca.pem")
    shutil.copyfile(pki.signer_cert(signer), issuer_dir / "signer.pem")
    shutil.copyfile(pki.signer_key(signer), issuer_dir / "signer.key")
    (issuer_dir / "signer.key").chmod(0o640)
    defaults = role_defaults(repo)
    variables = dict(defaults)
    variables.update(
        {
            "ansible_managed": "Rendered by bench/stack.py from the role's template",
            "ocsp_responder_bind": bind,
            "ocsp_responder_workers": workers,
            "ocsp_responder_state_dir": str(etc / "state"),
            "__ocsp_responder_issuers": [
                {
                    "name": ISSUER_NAME,
                    "issuer_dir": str(issuer_dir),
                    "response_validity": defaults["ocsp_responder_response_validity"],
                    "responder_id": defaults["ocsp_responder_responder_id"],
                    "signature_hash": defaults["ocsp_responder_signature_hash"],
                    "max_data_age": defaults["ocsp_responder_max_data_age"],
                    "data_expiry_grace": defaults["ocsp_responder_data_expiry_grace"],
                    "status_source": "index",
                    "status_paths": [str(pki.index)],
                }
            ],
        }
    )
    template = "roles/ocsp_responder/templates/config.toml.j2"
    try:
        text = _env(repo).get_template(template).render(variables)
    except jinja2.TemplateError as exc:
        raise jinja2.TemplateError(f"{repo / template}: {exc}") from exc
    config = etc / "config.toml"
    config.write_text(text)
    return config


_NGINX_MAIN = """\
# Main nginx configuration for the benchmark (bench/stack.py): Debian 12's
# /etc/nginx/nginx.conf with the paths moved into {prefix}; the site is the
# project's templates/nginx.conf.j2 rendered for loopback.
user {user};
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
daemon off;
# (Debian's `include modules-enabled/*.conf` is left out: the site needs no dynamic module)

events {{
    worker_connections 768;
}}

http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    gzip on;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/site.conf;
}}
"""


def write_nginx(repo: Path, prefix: Path, listen_port: int, upstream: str) -> Path:
    """Render templates/nginx.conf.j2 for loopback and wrap it in a main config.

    Args:
        repo: the project checkout.
        prefix: nginx prefix directory (logs, pid, cache, temp files).
        listen_port: loopback port nginx listens on.
        upstream: the responder's HOST:PORT.

    Returns:
        the main configuration file (``nginx -c``).

    Raises:
        jinja2.TemplateError: the template does not render (names the variable).
    """
    defaults = role_defaults(repo)
    user = "www-data"
    try:
        uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
    except KeyError:
        user, uid, gid = "root", 0, 0
    cache = prefix / "cache"
    for sub in (cache, prefix / "tmp"):
        sub.mkdir(parents=True, exist_ok=True)
        os.chown(sub, uid, gid)
    cache.chmod(0o700)
    prefix.chmod(0o755)
    names = [
        "ocsp_responder_server_name",
        "ocsp_responder_nginx_upstream_keepalive",
        "ocsp_responder_nginx_cache_zone_size",
        "ocsp_responder_nginx_cache_max_size",
        "ocsp_responder_nginx_cache_inactive",
        "ocsp_responder_nginx_cache_fallback_valid",
        "ocsp_responder_nginx_client_max_body_size",
        "ocsp_responder_nginx_timeout",
        "ocsp_responder_nginx_connect_timeout",
        "ocsp_responder_nginx_default_server",
        "ocsp_responder_nginx_log_client_address",
        "ocsp_responder_monitoring_allow",
    ]
    variables = {name: defaults[name] for name in names}
    variables.update(
        {
            "ocsp_responder_nginx_listen": [f"127.0.0.1:{listen_port}"],
            "ocsp_responder_nginx_upstream": upstream,
            "ocsp_responder_nginx_cache_dir": str(cache),
            "ocsp_responder_nginx_access_log": str(prefix / "ocsp-access.log"),
        }
    )
    template = "templates/nginx.conf.j2"
    try:
        site = _env(repo).get_template(template).render(variables)
    except jinja2.TemplateError as exc:
        raise jinja2.TemplateError(f"{repo / template}: {exc}") from exc
    (prefix / "site.conf").write_text(site)
    main = prefix / "nginx.conf"
    main.write_text(_NGINX_MAIN.format(prefix=prefix, user=user))
    test = subprocess.run(
        ["nginx", "-t", "-q", "-c", str(main), "-p", str(prefix), "-e", str(prefix / "error.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    if test.returncode != 0:
        raise RuntimeError(
            f"nginx -t failed for {main} (site {prefix / 'site.conf'} "
            f"from {repo / template}):\n{test.stderr.strip()}"
        )
    return main


@dataclass
class Ours:
    """The running responder and the nginx in front of it.

    Attributes:
        origin: the ``ocsp-responder serve`` process (granian's main process).
        nginx: the nginx master.
        origin_port: the responder's loopback port.
        nginx_port: nginx's loopback port.
        config: the rendered config.toml.
    """

    origin: procs.Server
    nginx: procs.Server
    origin_port: int
    nginx_port: int
    config: Path


def start_ours(
    processes: procs.Processes,
    repo: Path,
    venv: Path,
    pki: Pki,
    signer: str,
    *,
    workdir: Path,
    origin_port: int,
    nginx_port: int,
    workers: int = 2,
) -> Ours:
    """Start ``ocsp-responder serve`` and nginx for one signer.

    Raises:
        RuntimeError: a process exited or did not listen (its log tail is included).
    """
    etc = workdir / f"etc-{signer}"
    bind = f"127.0.0.1:{origin_port}"
    config = write_config(repo, pki, signer, etc, bind=bind, workers=workers)
    check = subprocess.run(
        [str(venv / "bin" / "ocsp-responder"), "check-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise RuntimeError(f"ocsp-responder check-config {config} failed:\n{check.stderr}")
    origin = processes.start(
        f"ours-{signer}-origin",
        [
            str(venv / "bin" / "ocsp-responder"),
            "serve",
            "--config",
            str(config),
            "--bind",
            bind,
            "--workers",
            str(workers),
        ],
    )
    procs.wait_listening(origin, origin_port)
    prefix = workdir / f"nginx-{signer}"
    prefix.mkdir(parents=True, exist_ok=True)
    main = write_nginx(repo, prefix, nginx_port, bind)
    nginx = processes.start(
        f"ours-{signer}-nginx",
        ["nginx", "-c", str(main), "-p", str(prefix), "-e", str(prefix / "error.log")],
    )
    procs.wait_listening(nginx, nginx_port)
    return Ours(origin, nginx, origin_port, nginx_port, config)
