"""
First-boot provisioning: what a VM is told when its guest first boots
(C{user_data}, C{ssh_keys}, its host name), as a cloud-init NoCloud seed.

The seed is an ISO 9660 volume labelled C{cidata} holding C{user-data} and
C{meta-data}, which cloud-init (and most cloud images' first-boot agents)
read from any CD-ROM at boot.  The ISO is made by pycdlib in a thread (the
reactor never waits on it) and written to a small volume of the VM on its
storage server (L{comet.model.storage.vmdisks}), attached as a CD-ROM
wherever the VM starts and moved with it on a migration.

The SSH keys go in C{meta-data}'s C{public-keys} (cloud-init installs them
for the default user whatever C{user-data} holds: a cloud-config, a shell
script or a MIME multipart), and the host name in C{local-hostname}.  The
instance id is the VM's uuid: cloud-init runs its once-per-instance modules
once for the VM's life.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from typing import Any

import attrs

from comet.errors import InvalidInput

#: Most bytes of C{user_data} (UTF-8): what clouds accept (EC2 allows 16 KiB,
#: OpenStack 64 KiB), and what fits the seed volume with room to spare.
MAX_USER_DATA = 64 * 1024
#: Most SSH keys a VM is given, and the longest one (an RSA 16384-bit key is ~2.8 KB).
MAX_SSH_KEYS = 32
MAX_SSH_KEY = 8192
#: Bytes of the seed volume: the ISO of the largest seed (~450 KiB) fits.
SEED_SIZE = 1024 * 1024
#: The volume label cloud-init's NoCloud data source looks for.
SEED_LABEL = "cidata"

#: The SSH public key types OpenSSH accepts in authorized_keys.
_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ssh-dss",
    "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)


def _blob_prefix(key_type: str) -> str:
    """The base64 every blob of C{key_type} starts with: its length-prefixed name's whole quanta."""
    header = len(key_type).to_bytes(4, "big") + key_type.encode()
    return base64.b64encode(header[: len(header) // 3 * 3]).decode()


def _escape(text: str) -> str:
    """C{text} as a regex both Python and ECMA-262 (u) read alike: only C{.} and C{+} escaped."""
    return text.replace(".", "\\.").replace("+", "\\+")


#: One authorized_keys line: a known type, base64 whose decoded blob starts
#: with that type's length-prefixed name, an optional comment.  Shared with
#: the request schema (L{comet.web.vms}): what it accepts, this accepts.
SSH_KEY_PATTERN = (
    "^(?:" + "|".join(f"{_escape(t)} {_escape(_blob_prefix(t))}" for t in _KEY_TYPES)
    + ")(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?(?: [\\x20-\\x7e]*)?$"
)
_KEY = re.compile(SSH_KEY_PATTERN)
#: A host name: RFC 1123 labels (and at most 253 characters).
HOSTNAME_PATTERN = (r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_HOSTNAME = re.compile(HOSTNAME_PATTERN)


def check_hostname(hostname: object) -> str:
    """C{hostname} if it is a host name (RFC 1123 labels, at most 253 characters)."""
    if (not isinstance(hostname, str) or len(hostname) > 253
            or not _HOSTNAME.fullmatch(hostname)):
        raise InvalidInput(
            f"hostname must be a host name (letters, digits and hyphens in dot-separated"
            f" labels of at most 63 characters), not {hostname!r}"
        )
    return hostname


def default_hostname(name: str) -> str:
    """
    The host name of VM C{name} when none is given: its name, with what a
    host name cannot hold (C{_}, C{.}) made C{-}.
    """
    label = re.sub(r"[^A-Za-z0-9-]", "-", name)[:63].strip("-")
    return label or "vm"


def check_ssh_key(key: object) -> str:
    """
    C{key} (without surrounding white space) if it is one SSH public key
    line (L{SSH_KEY_PATTERN}: C{TYPE BASE64 [COMMENT]}, the blob naming the
    same type).
    """
    if not isinstance(key, str) or len(key) > MAX_SSH_KEY:
        raise InvalidInput(f"an SSH key is a string of at most {MAX_SSH_KEY} characters")
    if not _KEY.fullmatch(key.strip()):
        raise InvalidInput(f"{_abbreviated(key)!r} is not an SSH public key"
                           f" ({', '.join(_KEY_TYPES)} followed by its base64 blob)")
    return key.strip()


def _abbreviated(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


@attrs.frozen
class Provisioning:
    """What a VM's seed tells its guest; validated when made (L{from_request})."""

    #: C{None}: the VM's name (L{default_hostname}), once it has one.
    hostname: str | None
    ssh_keys: tuple[str, ...] = ()
    #: The user-data as given (a cloud-config, a script, ...), or C{None}.
    user_data: str | None = None

    @classmethod
    def from_request(cls, hostname: object, ssh_keys: object, user_data: object
                     ) -> Provisioning:
        """Checked values from a request; L{InvalidInput} names the first wrong one."""
        if hostname is not None:
            check_hostname(hostname)
        if ssh_keys is None:
            ssh_keys = []
        if not isinstance(ssh_keys, list) or len(ssh_keys) > MAX_SSH_KEYS:
            raise InvalidInput(f"ssh_keys is a list of at most {MAX_SSH_KEYS} SSH public keys")
        keys = tuple(check_ssh_key(key) for key in ssh_keys)
        if user_data is not None:
            if not isinstance(user_data, str):
                raise InvalidInput("user_data is a string")
            size = len(user_data.encode("utf-8", "surrogatepass"))
            if size > MAX_USER_DATA or "\x00" in user_data:
                raise InvalidInput(f"user_data is text of at most {MAX_USER_DATA} bytes"
                                   f" ({size} given)")
        return cls(hostname, keys, user_data)

    def user_data_bytes(self) -> bytes:
        # Without user-data of its own, an empty cloud-config: cloud-init
        # needs the file, and this one changes nothing.
        text = self.user_data if self.user_data is not None else "#cloud-config\n{}\n"
        return text.encode("utf-8")

    def meta_data_bytes(self, instance_id: str) -> bytes:
        # JSON is YAML: no YAML writer is needed, and nothing given can
        # escape its string.
        meta: dict[str, Any] = {"instance-id": instance_id, "local-hostname": self.hostname}
        if self.ssh_keys:
            meta["public-keys"] = list(self.ssh_keys)
        return json.dumps(meta, indent=1).encode() + b"\n"

    def summary(self) -> dict:
        """
        What the VM's representation shows, and what its record keeps: the
        host name and keys (public), and of C{user_data} only its size and
        SHA-256 (it may hold secrets: passwords, tokens).
        """
        data = self.user_data_bytes() if self.user_data is not None else None
        return {
            "hostname": self.hostname,
            "ssh_keys": list(self.ssh_keys),
            "user_data_bytes": None if data is None else len(data),
            "user_data_sha256": None if data is None else hashlib.sha256(data).hexdigest(),
        }


def requested(hostname: object, ssh_keys: object, user_data: object) -> Provisioning | None:
    """The checked provisioning of a VM create, or C{None} when it asks for none."""
    if hostname is None and ssh_keys is None and user_data is None:
        return None
    return Provisioning.from_request(hostname, ssh_keys, user_data)


def seed_iso(provisioning: Provisioning, instance_id: str) -> bytes:
    """
    The NoCloud seed ISO (Rock Ridge and Joliet names, so that C{user-data}
    and C{meta-data} keep their names on every reader).  CPU work: call it in
    a thread (L{twisted.internet.threads.deferToThread}).
    """
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    try:
        for iso_name, name, data in (
            ("/USERDATA.;1", "user-data", provisioning.user_data_bytes()),
            ("/METADATA.;1", "meta-data", provisioning.meta_data_bytes(instance_id)),
        ):
            iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name,
                       joliet_path=f"/{name}")
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    image = out.getvalue()
    if len(image) > SEED_SIZE:
        raise InvalidInput(f"the seed would be {len(image)} bytes, more than {SEED_SIZE}")
    return image
