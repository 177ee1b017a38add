"""The agent's configuration: one pydantic model, read from YAML or TOML, overridable by flags.

Unknown keys are errors (`extra="forbid"`), and every error names its field path, so a
typo in a clinic's config file stops the agent with one clear line instead of being
ignored. String values may use `${ENV}` or `${ENV:-default}` (nested defaults too); an
error line names such a value's variable, never the value. The broker password can also
come from a file (`mqtt.password_file`, e.g. a systemd credential). A file over 1 MiB or
with YAML aliases is refused before it can cost time or memory.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.backends import NAMES
from edge.configfile import MAX_CONFIG_BYTES, hide_env_values, read_file, substitute_env  # noqa: F401 - re-exported
from edge.errors import BadInput, validated
from edge.messages import DEFAULT_PREFIX
from edge.redact import redact_url
from edge.sources.pace import parse_fps

_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BackendConfig(_Strict):
    name: str = "auto"
    allow_fallback: bool = True
    threads: int | None = Field(None, ge=1, le=64)
    device: str | None = None  # Edge TPU "usb" / "pci" / "usb:0"; GPU id for ONNX Runtime

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in NAMES:
            raise ValueError(f"unknown backend {v!r} (choose from: {', '.join(NAMES)})")
        return v


class WatchdogConfig(_Strict):
    stall_s: float = Field(10.0, gt=0)
    backoff_initial_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)


class SourceConfig(_Strict):
    uri: str = "cv:0"
    loop: bool = False
    width: int | None = Field(None, ge=16)
    height: int | None = Field(None, ge=16)
    # How fast files and folders play: "auto" (a video at its own frame rate, a looped folder at
    # 2 images/s, a folder played once unpaced), a number of frames/s, or "max" (unpaced, for
    # benchmarks). Cameras and streams are never paced. edge/sources/pace.py says why.
    fps: float | Literal["auto", "max"] = "auto"
    # Frames over this many pixels are skipped as bad (too_large); image files are checked
    # from their header, before decoding. 50 MP is a 8660x5773 frame, 150 MB as RGB.
    max_pixels: int = Field(50_000_000, ge=256)
    watchdog: WatchdogConfig = Field(default_factory=WatchdogConfig)

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not v.strip() or "\0" in v:
            raise ValueError("must name a camera, stream, video file or image folder")
        if v.startswith("cv:") and v[3:] and not (v[3:].isascii() and v[3:].isdigit()):
            raise ValueError(f"{v!r}: a cv: camera is a device number, e.g. cv:0")
        return v

    @field_validator("fps", mode="before")
    @classmethod
    def _fps(cls, v):
        return parse_fps(v)  # null reads as auto (older configs wrote `fps: null`)

    @property
    def safe_uri(self) -> str:
        """The source URI fit for logs and messages: credentials inside it replaced by ***."""
        return redact_url(self.uri)


class GateConfig(_Strict):
    mode: Literal["still", "continuous"] = "still"
    still_frames: int = Field(3, ge=1)
    motion_threshold: float = Field(3.0, gt=0)
    focus_threshold: float = Field(0.04, ge=0)
    min_contrast: float = Field(4.0, ge=0)
    novelty_threshold: float = Field(6.0, ge=0)
    every_n: int = Field(1, ge=1)
    analysis_width: int = Field(160, ge=32, le=1024)


class SampleConfig(_Strict):
    """How fields pool into samples (slides) and how much evidence a slide decision needs (edge/samples.py)."""

    # Open a sample at a field with none open. None = on only when there is no station page
    # (`ui.listen: off`, an unattended box); with the page, a sample opens by Start or a scanned id.
    auto_open: bool | None = None
    fields_per_sample: int = Field(0, ge=0)
    idle_close_s: float = Field(0.0, ge=0)
    min_fields: int | None = Field(None, ge=1)  # familiar fields a decision needs; None = the manifest's, else 5
    max_unfamiliar: float = Field(0.2, ge=0.0, le=1.0)  # a larger share of unfamiliar fields: refer


class TLSConfig(_Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _readable(cls, v: Path | None) -> Path | None:
        """Checked here, so a missing file is named before anything starts (not a TLS traceback later)."""
        if v is not None and not v.is_file():
            raise ValueError(f"{v}: {'not a file' if v.exists() else 'file not found'}")
        return v


class MQTTConfig(_Strict):
    url: str | None = None  # mqtt://host:1883 or mqtts://host:8883; None runs offline
    prefix: str = DEFAULT_PREFIX
    client_id: str | None = None
    username: str | None = None
    password: str | None = Field(None, repr=False)
    password_file: Path | None = None
    tls: TLSConfig = Field(default_factory=TLSConfig)  # used when the url is mqtts://
    protocol: Literal["5", "3.1.1"] = "5"  # 3.1.1 cannot tell a retained command delivered live (docs/edge.md)
    keepalive_s: int = Field(30, ge=5)
    reconnect_min_s: float = Field(1.0, gt=0)
    reconnect_max_s: float = Field(60.0, gt=0)
    inflight: int = Field(50, ge=1, le=1000)
    stats_interval_s: float = Field(30.0, gt=0)
    homeassistant: bool = False  # publish Home Assistant discovery configs on connect (edge.homeassistant)
    homeassistant_prefix: str = "homeassistant"  # HA's discovery prefix

    @field_validator("url", mode="before")
    @classmethod
    def _url(cls, v):
        if v is False or v in (None, "", "none", "off"):  # YAML reads an unquoted `off` or `no` as false
            return None
        if not isinstance(v, str):
            raise ValueError(f"{v!r} is not a URL: write mqtt://host[:port], or 'off' (quoted) to run offline")
        u = urlsplit(v)
        if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
            raise ValueError(f"{redact_url(v)!r} is not mqtt://host[:port] or mqtts://host[:port]")
        u.port  # noqa: B018 - raises ValueError on a bad port
        return v

    @field_validator("prefix", "homeassistant_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v or any(c in v for c in "#+\0") or v.startswith("/") or v.endswith("/"):
            raise ValueError(f"prefix {v!r} must be a plain topic level without wildcards or edge slashes")
        return v

    @property
    def safe_url(self) -> str:
        """The broker URL fit for logs: any password inside it replaced by ***."""
        return redact_url(self.url) if self.url else "off (offline)"

    def secret(self) -> str | None:
        """The broker password: inline (after ${ENV} substitution) or read from password_file."""
        if self.password_file is None:
            return self.password
        try:
            return self.password_file.read_text().strip()
        except OSError as exc:
            raise BadInput(f"mqtt.password_file {self.password_file}: cannot read ({exc.strerror})") from None


def _file_path(v):
    """A path the agent writes: not empty, not a folder (checked before anything starts)."""
    if isinstance(v, str) and not v.strip():
        raise ValueError("empty path: give a file name")
    if isinstance(v, (str, Path)) and Path(v).is_dir():  # anything else: pydantic's own type error
        raise ValueError(f"{v} is a folder: give a file inside it")
    return v


class OutboxConfig(_Strict):
    path: Path = Path("leukedge-outbox.sqlite")
    max_rows: int = Field(100_000, ge=10)
    max_bytes: int = Field(200_000_000, ge=10_000)
    memory_rows: int = Field(10_000, ge=10)  # held in memory while the disk refuses writes (full, failing)
    synchronous: Literal["normal", "full"] = "normal"

    _path = field_validator("path", mode="before")(_file_path)


class ResultLogConfig(_Strict):
    path: Path | None = Path("leukedge-results.jsonl")
    max_bytes: int = Field(10_000_000, ge=10_000)
    backups: int = Field(5, ge=0)

    _path = field_validator("path", mode="before")(_file_path)


class UIConfig(_Strict):
    """The station page, health and metrics (edge/station). A LAN bind needs a password."""

    listen: str | None = "127.0.0.1:8080"  # HOST:PORT; "off" (or null) = no page
    password_file: Path | None = None  # basic auth: one line, user "station" (or "user:password")
    cert_file: Path | None = None  # HTTPS with both set
    key_file: Path | None = None
    linger_s: float = Field(0.0, ge=-1)  # after a finite source ends: keep serving; -1 = until stopped
    alive_s: float = Field(30.0, gt=0)  # /healthz is 503 when the loop has not come round for this long
    # Host names the page answers to besides loopback names, IP addresses and this box's name
    # (a DNS-rebinding page sends its own name): e.g. ["scope-01.clinic.lan"]
    allowed_hosts: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for name in v:
            labels = name.removesuffix(".").split(".")
            if len(name) > 253 or not all(re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", x) for x in labels):
                raise ValueError(f"allowed_hosts: {name[:80]!r} is not a host name (no port, no scheme, no wildcard)")
        return [name.lower().rstrip(".") for name in v]

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str | None) -> str | None:
        if v in (None, "", "off", "none"):
            return None
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r} is not HOST:PORT (port 0-65535) or 'off'")
        return v

    @model_validator(mode="after")
    def _lan_needs_password(self) -> "UIConfig":
        if self.listen is not None and not self.loopback and self.password_file is None:
            raise ValueError(f"listen {self.listen} is reachable from the network: set ui.password_file "
                             "(a clinic LAN is not a trusted network) or listen on 127.0.0.1")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (HTTPS needs both)")
        return self

    @property
    def loopback(self) -> bool:
        """True when only this box can reach the page (127.0.0.0/8, ::1, localhost)."""
        import ipaddress

        host = self.address[0]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a host name: assume it resolves to a LAN address

    @property
    def address(self) -> tuple[str, int] | None:
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


class TrustConfig(_Strict):
    keys: list[Path] = Field(default_factory=list)  # Ed25519 public keys (PEM); empty = no updates at all


class UpdateConfig(_Strict):
    store: Path | None = None  # None = a `bundles/` folder beside the outbox
    keep: int = Field(3, ge=2, le=50)
    max_bytes: int = Field(64_000_000, ge=100_000)
    watch_dir: Path | None = None  # a drop folder (USB stick); None = off


class ThresholdsConfig(_Strict):
    refer_below: float | None = Field(None, ge=0.0, le=1.0)  # a field's cut-off; None = the bundle manifest's
    # a slide's cut-off; None = the manifest's, else the field's (older bundles have none)
    sample_refer_below: float | None = Field(None, ge=0.0, le=1.0)


class AgentConfig(_Strict):
    device_id: str = Field(default_factory=lambda: re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:64] or "edge")
    bundle: Path
    backend: BackendConfig = Field(default_factory=BackendConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    mqtt: MQTTConfig = Field(default_factory=MQTTConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    result_log: ResultLogConfig = Field(default_factory=ResultLogConfig)
    ui: UIConfig = Field(default_factory=UIConfig)


    thresholds: ThresholdsConfig = Field(default_factory=ThresholdsConfig)
    trust: TrustConfig = Field(default_factory=TrustConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    drain_timeout_s: float = Field(10.0, ge=0)  # after a finite source ends: wait this long for PUBACKs
    max_frames: int | None = Field(None, ge=1)  # stop after this many frames (tests, benchmarks)

    @property
    def store(self) -> Path:
        """Where installed bundles live: update.store, else `bundles/` beside the outbox."""
        return self.update.store or self.outbox.path.parent / "bundles"

    @model_validator(mode="after")
    def _auto_open(self) -> "AgentConfig":
        """sample.auto_open unset: on for a box without the page, off with it (someone presses Start)."""
        if self.sample.auto_open is None:
            self.sample.auto_open = self.ui.listen is None
        return self

    @field_validator("device_id")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.match(_ID, v):
            raise ValueError(f"device_id {v!r} must be 1-64 of letters, digits, '.', '_' or '-'")
        return v


# --------------------------------------------------------------------------- loading

def merge(base: dict, overrides: dict) -> dict:
    """Nested dict merge: mappings merge key by key, anything else (None included) replaces."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def prune(flags: dict) -> dict:
    """Drop flags that were not given (None) and sections left empty."""
    out = {}
    for key, value in flags.items():
        if isinstance(value, dict):
            value = prune(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def validate(data: dict, origin: str = "config") -> AgentConfig:
    return validated(AgentConfig, data, origin)


def load_config(path: Path | None = None, overrides: dict | None = None, env=None) -> AgentConfig:
    """Read `path` (if any), substitute ${ENV}, apply flag overrides, validate."""
    data = read_file(path) if path else {}
    used: dict[str, str] = {}
    data = substitute_env(data, env=env, used=used)
    try:
        return validate(merge(data, overrides or {}), str(path) if path else "flags")
    except BadInput as exc:
        raise BadInput(hide_env_values(str(exc), used)) from None
