"""Artifacts in an OCI registry: push a stored artifact, pull one into the store, ask whether a tag is there.

Layout: one layer per artifact file, whose digest is the file's sha256 as the ingot manifest records it and whose
title is its relative path; the OCI manifest's config blob is the artifact's manifest.json, byte for byte, so the
config's digest is the manifest's digest, which vouches for every file (as the store's ``digests/KEY.sha256``
does). One layer per file rather than a tar of the directory: a pulled file is checked against the one sha256 the
manifest already holds (a tar would add an archive digest and an archive format to trust), every file streams
straight to disk, and files shared between artifacts (the native library, a tokenizer) are stored once.

A pull is a build in the store: the files go into its temp dir under the key's lock, each is hashed while it
streams, and the whole artifact is checked (``check_artifact``, against the config's digest) before the rename,
so a partial, tampered or lying pull never becomes a cache entry. The registry is trusted for what a tag names,
as a compile is trusted for what it builds; the checks catch blobs changed in its storage or in transit, and a
manifest whose layers disagree with the files it lists.

Credentials: ``$INGOT_REGISTRY_USERNAME`` and ``$INGOT_REGISTRY_PASSWORD``, else the docker config
(``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``, as ``docker login`` writes it); never arguments.
Plain HTTP only for a registry on this host (localhost, 127.0.0.1, ::1) or when asked for.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import oras.container
import oras.defaults
import oras.provider
import requests
from requests.adapters import HTTPAdapter

from ingot.artifacts.integrity import check_artifact
from ingot.artifacts.manifest import MANIFEST_NAME, FileEntry, Manifest, manifest_sha256, read_manifest_bytes
from ingot.artifacts.store import ArtifactStore
from ingot.artifacts.toolchain import toolchain_mismatch
from ingot.errors import (
    ArtifactError, OptionError, RegistryAuthError, RegistryError, RegistryNotFoundError, RegistryUnreachableError,
)  # fmt: skip

ARTIFACT_TYPE = "application/vnd.ingot.artifact.v1"
MANIFEST_MEDIA_TYPE = "application/vnd.ingot.manifest.v1+json"  # the config blob: manifest.json as it is
FILE_MEDIA_TYPE = "application/vnd.ingot.file.v1"  # a layer: one artifact file as it is
OCI_MANIFEST_MEDIA_TYPE = oras.defaults.default_manifest_media_type
TITLE = oras.defaults.annotation_title  # a layer's file path inside the artifact
USERNAME_ENV = "INGOT_REGISTRY_USERNAME"
PASSWORD_ENV = "INGOT_REGISTRY_PASSWORD"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
TIMEOUTS = (10, 300)  # seconds to connect, and between two reads of an answer
MAX_MANIFEST_BYTES = 16 << 20  # a manifest.json is kilobytes; a bigger config blob is not one
UPLOAD_CHUNK = 64 << 20  # files upload in chunks, so a weights file is never read into memory whole
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")  # OCI's tag grammar; a key must fit it (and a dir name)


@dataclass(frozen=True)
class Pushed:
    ref: str  # registry/repository:tag
    digest: str  # the OCI manifest's digest: ref@digest names exactly this push
    blobs: int  # one per file, and the manifest
    bytes: int


@dataclass(frozen=True)
class Pulled:
    key: str
    path: Path
    downloaded: bool  # False: the store had it already


def push_artifact(path: Path, ref: str, plain_http: bool = False) -> Pushed:
    """Push the artifact at ``path`` to ``ref`` (tag: the artifact's key unless ``ref`` names one), after checking
    every file against its manifest, so only what the store vouches for leaves it."""
    manifest = check_artifact(path)
    raw = read_manifest_bytes(path)
    container = _parse_ref(ref, default_tag=_checked_key(manifest.key, ref))
    client = _Client(container, plain_http)
    layers = []
    for name, entry in manifest.files.items():
        layer = {"mediaType": FILE_MEDIA_TYPE, **_descriptor(entry), "annotations": {TITLE: name}}
        client.upload(path / name, layer)
        layers.append(layer)
    config = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": f"sha256:{manifest_sha256(raw)}", "size": len(raw)}
    client.upload(path / MANIFEST_NAME, config)
    oci_manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": config,
        "layers": layers,
        "annotations": {
            "dev.ingot.key": manifest.key,
            "dev.ingot.model": manifest.model.name,
            "dev.ingot.kind": manifest.kind,
            "dev.ingot.target": manifest.target,
            "org.opencontainers.image.created": manifest.created_at,
        },
    }
    digest = client.put_manifest(oci_manifest)
    size = sum(entry.size for entry in manifest.files.values()) + len(raw)
    return Pushed(container.uri, digest, len(layers) + 1, size)


def tag_exists(ref: str, plain_http: bool = False) -> bool:
    """Whether the registry has ``ref`` (a HEAD of its manifest: no blob is downloaded)."""
    container = _parse_ref(ref)
    return _Client(container, plain_http).has_manifest()


def check_pullable(store: ArtifactStore, ref: str, plain_http: bool = False) -> None:
    """Raise the error ``pull_artifact(store, ref)`` would fail with first (a malformed REF, an unreachable registry,
    refused credentials, no such tag), downloading nothing: the store has the tag's key, or the registry the tag."""
    container = _parse_ref(ref)
    if _cached(store, container):
        return
    if not _Client(container, plain_http).has_manifest():
        raise RegistryNotFoundError(f"{container.uri}: not in the registry")


def pull_artifact(store: ArtifactStore, ref: str, plain_http: bool = False) -> Pulled:
    """The artifact ``ref`` names, in ``store``: there already if the tag is a key the store has (no network), else
    pulled, every file checked, and published under its key."""
    container = _parse_ref(ref)
    if _cached(store, container):
        return Pulled(container.tag, store.path(container.tag), downloaded=False)
    client = _Client(container, plain_http)
    oci_manifest = client.manifest()
    raw = client.config_blob(oci_manifest)
    manifest = Manifest.parse(ref, raw)
    key = _checked_key(manifest.key, ref)
    reason = toolchain_mismatch(manifest.toolchain)
    if reason:  # before gigabytes are downloaded for nothing
        raise ArtifactError(f"{ref}: {reason}")
    layers = _layers_by_file(oci_manifest, manifest, ref)
    with store.build(key) as workdir:
        if workdir is None:
            return Pulled(key, store.path(key), downloaded=False)
        (workdir / MANIFEST_NAME).write_bytes(raw)
        for name, entry in manifest.files.items():
            client.download(layers[name], entry, workdir / name, f"{ref}: {name}")
        check_artifact(workdir, manifest_digest=manifest_sha256(raw))
    return Pulled(key, store.path(key), downloaded=True)


def _cached(store: ArtifactStore, container: oras.container.Container) -> bool:
    """Whether the store has what a tag names (a tag is the artifact's key); a digest is known only to the registry."""
    return not container.digest and store.has(container.tag)


def _checked_key(key: str, ref: str) -> str:
    """A key becomes a tag and a directory name: it must be a plain name (an artifact's key is hex)."""
    if not _TAG.fullmatch(key):
        raise ArtifactError(f"{ref}: the manifest's key {key!r} is not a plain name")
    return key


def _parse_ref(ref: str, default_tag: str | None = None) -> oras.container.Container:
    """``REGISTRY/REPOSITORY[:TAG|@DIGEST]``; the registry must be named (no Docker Hub default)."""
    usage = f"{ref}: expected REGISTRY/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/ingot/smollm2-135m:KEY"
    try:
        container = oras.container.Container(ref)
    except ValueError:
        raise OptionError(usage) from None
    if not ref.startswith(f"{container.registry}/"):
        raise OptionError(usage)
    last = ref.rsplit("/", 1)[-1]
    if default_tag is not None and ":" not in last and "@" not in last:
        container.tag = default_tag
    if container.digest and default_tag is not None:
        raise OptionError(f"{ref}: push to a tag, not a digest")
    return container


def _descriptor(entry: FileEntry) -> dict:
    return {"digest": f"sha256:{entry.sha256}", "size": entry.size}


def _layers_by_file(oci_manifest: dict, manifest: Manifest, ref: str) -> dict[str, dict]:
    """Each listed file's layer, refused unless the layers are exactly the manifest's files with its digests."""
    layers: dict[str, dict] = {}
    for layer in oci_manifest.get("layers", []):
        name = (layer.get("annotations") or {}).get(TITLE)
        if name not in manifest.files or name in layers:
            raise ArtifactError(f"{ref}: layer {layer.get('digest')} ({name}) is not one of the artifact's files")
        if {key: layer.get(key) for key in ("digest", "size")} != _descriptor(manifest.files[name]):
            raise ArtifactError(f"{ref}: the layer of {name} does not match its sha256 in the manifest (tampered)")
        layers[name] = layer
    missing = sorted(set(manifest.files) - set(layers))
    if missing:
        raise ArtifactError(f"{ref}: {missing[0]} has no layer (an incomplete push)")
    return layers


class _Timeouts(HTTPAdapter):
    """requests waits forever by default; a registry that stops answering becomes an error instead."""

    def send(self, request: requests.PreparedRequest, timeout: object = None, **kwargs: object) -> requests.Response:
        return super().send(request, timeout=timeout or TIMEOUTS, **kwargs)


class _OneAttempt(oras.provider.Registry):
    """oras retries a failed request five times, sleeping up to 81 s; one attempt keeps an unreachable registry a
    prompt one-line error (a CI job retries the whole command if it wants)."""

    do_request = oras.provider.Registry.do_request.__wrapped__


class _Client:
    """One repository of one registry through the oras SDK, every failure one of ingot's registry errors."""

    def __init__(self, container: oras.container.Container, plain_http: bool) -> None:
        logging.getLogger("oras.logger").setLevel(logging.CRITICAL)  # failures are reported as ingot errors
        self.container = container
        self.host = container.registry
        plain_http = plain_http or self.host.rsplit(":", 1)[0] in LOCAL_HOSTS or self.host in LOCAL_HOSTS
        self.base = f"{'http' if plain_http else 'https'}://{self.host}"
        challenge = self._probe()
        scheme = challenge.split(" ", 1)[0].lower()
        self.oras = _OneAttempt(self.host, insecure=plain_http, auth_backend="basic" if scheme == "basic" else "token")
        for prefix in ("http://", "https://"):
            self.oras.session.mount(prefix, _Timeouts())
        credentials = self._credentials()
        if scheme == "basic":  # sent with every request: no 401 round trip, no chunk uploaded twice
            if credentials is None:
                raise RegistryAuthError(f"{self.host} asks for credentials: {_how_to_log_in(self.host)}")
            self.oras.session.headers["Authorization"] = f"Basic {credentials}"
            with self._calling(self.host):
                self._check(self.oras.session.get(f"{self.base}/v2/"), self.host)  # wrong credentials: said once

    def _probe(self) -> str:
        """GET /v2/ (the API's version check): reachable at all, and how it wants to be authenticated."""
        try:
            response = requests.get(f"{self.base}/v2/", timeout=TIMEOUTS)
        except requests.exceptions.SSLError:
            raise RegistryUnreachableError(
                f"{self.host}: TLS handshake failed (a plain-HTTP registry? then --plain-http)"
            ) from None
        except requests.RequestException as error:
            raise RegistryUnreachableError(f"{self.host}: registry unreachable ({_reason(error)})") from None
        if response.status_code not in (200, 401):
            raise RegistryError(f"{self.host}: not an OCI registry (GET /v2/ answered HTTP {response.status_code})")
        return response.headers.get("Www-Authenticate", "") if response.status_code == 401 else ""

    def _credentials(self) -> str | None:
        """base64 of user:password, from the environment, else from the docker config (loaded into oras' auth)."""
        username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
        if username and password:
            self.oras.auth.set_basic_auth(username, password)
        else:
            docker_config = os.environ.get("DOCKER_CONFIG")
            configs = [str(Path(docker_config, "config.json"))] if docker_config else None
            self.oras.auth.load_configs(self.container, configs=configs)
        return getattr(self.oras.auth, "_basic_auth", None)  # oras keeps what it found here, for both backends

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """oras' and requests' exceptions, as ingot's registry errors."""
        try:
            yield
        except requests.RequestException as error:
            raise RegistryUnreachableError(f"{what}: {self.host} stopped answering ({_reason(error)})") from None
        except ValueError as error:  # oras: an authentication it could not answer, or a failed chunk
            if "authentication" in str(error):
                raise RegistryAuthError(f"{what}: {self.host} refused access: {_how_to_log_in(self.host)}") from None
            raise RegistryError(f"{what}: {error}") from None

    def _check(self, response: requests.Response, what: str) -> None:
        if response.status_code in (200, 201, 202):
            return
        if response.status_code in (401, 403):
            raise RegistryAuthError(
                f"{what}: {self.host} refused access (HTTP {response.status_code}): {_how_to_log_in(self.host)}"
            )
        if response.status_code == 404:
            raise RegistryNotFoundError(f"{what}: not in the registry")
        raise RegistryError(f"{what}: the registry answered HTTP {response.status_code}{_registry_message(response)}")

    def _manifest_url(self) -> str:
        return f"{self.oras.prefix}://{self.container.manifest_url()}"

    def has_manifest(self) -> bool:
        what = self.container.uri
        with self._calling(what):
            response = self.oras.do_request(self._manifest_url(), "HEAD", headers={"Accept": OCI_MANIFEST_MEDIA_TYPE})
        if response.status_code == 404:
            return False
        self._check(response, what)
        return True

    def manifest(self) -> dict:
        what = self.container.uri
        with self._calling(what):
            response = self.oras.do_request(self._manifest_url(), "GET", headers={"Accept": OCI_MANIFEST_MEDIA_TYPE})
        self._check(response, what)
        if self.container.digest and f"sha256:{hashlib.sha256(response.content).hexdigest()}" != self.container.digest:
            raise ArtifactError(f"{what}: the registry's manifest does not match the digest asked for")
        try:
            oci_manifest = response.json()
        except ValueError:
            raise RegistryError(f"{what}: the registry's manifest is not JSON") from None
        config = oci_manifest.get("config") if isinstance(oci_manifest, dict) else None
        if not isinstance(config, dict) or config.get("mediaType") != MANIFEST_MEDIA_TYPE:
            raise ArtifactError(f"{what}: not an ingot artifact (no {MANIFEST_MEDIA_TYPE} config)")
        return oci_manifest

    def config_blob(self, oci_manifest: dict) -> bytes:
        """The ingot manifest.json, checked against the digest the OCI manifest gives for it."""
        config, what = oci_manifest["config"], f"{self.container.uri}: {MANIFEST_NAME}"
        size, digest = config.get("size"), str(config.get("digest", ""))
        if not isinstance(size, int) or size > MAX_MANIFEST_BYTES or not digest.startswith("sha256:"):
            raise ArtifactError(f"{what}: not an ingot manifest (size {size}, digest {digest})")
        with self._calling(what), self.oras.get_blob(self.container, digest) as response:
            self._check(response, what)
            raw = response.content
        if len(raw) != size or manifest_sha256(raw) != digest.removeprefix("sha256:"):
            raise ArtifactError(f"{what}: does not match its digest in the registry's manifest (tampered or corrupt)")
        return raw

    def download(self, layer: dict, entry: FileEntry, target: Path, what: str) -> None:
        """Stream a layer into ``target``, hashing it as it comes; refused the moment it cannot be ``entry``."""
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, received = hashlib.sha256(), 0
        with self._calling(what), self.oras.get_blob(self.container, layer["digest"], stream=True) as response:
            self._check(response, what)
            with open(target, "wb") as file:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    received += len(chunk)
                    if received > entry.size:
                        break
                    digest.update(chunk)
                    file.write(chunk)
        if received != entry.size or digest.hexdigest() != entry.sha256:
            raise ArtifactError(f"{what} does not match its sha256 in the manifest (tampered or corrupt); not stored")

    def upload(self, path: Path, layer: dict) -> None:
        """A blob the registry lacks, in chunks; one it has is skipped (files shared between artifacts)."""
        what = f"{self.container.uri}: {path.name}"
        with self._calling(what):
            response = self.oras.upload_blob(str(path), self.container, layer, do_chunked=True, chunk_size=UPLOAD_CHUNK)
        self._check(response, what)

    def put_manifest(self, oci_manifest: dict) -> str:
        what = self.container.uri
        with self._calling(what):
            response = self.oras.upload_manifest(oci_manifest, self.container)
        self._check(response, what)
        return response.headers.get("Docker-Content-Digest", "")


def _how_to_log_in(host: str) -> str:
    return f"docker login {host}, or set ${USERNAME_ENV} and ${PASSWORD_ENV}"


def _reason(error: requests.RequestException) -> str:
    """What went wrong below requests, on one line, e.g. ``Failed to establish a new connection: [Errno 111]
    Connection refused`` (urllib3's ``HTTPConnection(host=..., port=...):`` prefix dropped)."""
    inner = getattr(error.args[0], "reason", None) if error.args else None
    text = " ".join(str(inner or error).split())
    return text.split("): ", 1)[-1] or type(error).__name__


def _registry_message(response: requests.Response) -> str:
    """The first message of an OCI error body, if there is one."""
    try:
        errors = response.json().get("errors") or []
        return f": {errors[0]['message']}" if errors else ""
    except (ValueError, AttributeError, LookupError, TypeError):
        return ""
