"""
The request body of a volume's creation (C{POST …/storagevolumes}): the
image URL's grammar and the combinations of C{capacity}, C{url}, C{format}
and C{sha256} that L{comet.model.storage.volumes.Volumes.create_volume}
takes.  The document states them all, so a request it calls valid is never
refused for its shape (a 400): an empty volume takes C{capacity} alone; a
raw image C{url} without C{capacity}; a compressed one C{url} and
C{capacity} (its size once decompressed); a qcow2 one C{url}, and
C{capacity} if the volume is to be larger than its virtual size.  Whether
an image is compressed (or qcow2) follows C{format}, or without it the URL
path's suffix, which a pattern says as the model reads it
(L{comet.model.storage.download.SUFFIXES}).
"""

from __future__ import annotations

from comet.model.storage.download import FORMATS, SUFFIXES
from comet.remote.zfs import DECOMPRESSORS
from comet.web._schemas import NAME, enum, obj

CAPACITY = {"type": "integer", "minimum": 1, "maximum": 1024 * 1024}
#: A port as Python's URL parser reads it (0 to 65535).
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
#: A host name label the model's IDNA check takes: ASCII letters, digits
#: and inner hyphens, not two in its third and fourth places, 30 at most.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9]|[A-Za-z0-9-]-?[A-Za-z0-9](?:[A-Za-z0-9-]{0,25}[A-Za-z0-9])?)?"
#: The same, starting with a letter: the last label of a name (no address is one).
_NAME_LABEL = "[A-Za-z]" + _LABEL[len("[A-Za-z0-9]"):]
_H16 = "[0-9A-Fa-f]{1,4}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9][0-9]|[0-9])"
_LS32 = rf"(?:{_H16}:{_H16}|{_OCTET}(?:\.{_OCTET}){{3}})"
#: An IPv6 address (RFC 3986's IPv6address), as Python's parser checks one in brackets.
_IPV6 = "(?:" + "|".join([
    rf"(?:{_H16}:){{6}}{_LS32}",
    rf"::(?:{_H16}:){{5}}{_LS32}",
    rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
    rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
    rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
    rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
    rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
]) + ")"
#: A character of a URL's path: printable ASCII but C{?} and C{#}, which end it.
_PATH_CHAR = r"""[!"$->@-~]"""


def _suffix_pattern(formats) -> str:
    """The path suffixes that say one of C{formats}, in any case, as one group."""
    def insensitive(suffix):
        return r"\." + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c
                               for c in suffix[1:])
    suffixes = sorted((s for s, f in SUFFIXES.items() if f in formats), key=len, reverse=True)
    return "(?:" + "|".join(insensitive(s) for s in suffixes) + ")"


#: The compressed formats, and the suffixes that say one.
COMPRESSED = tuple(f for f in FORMATS if f in DECOMPRESSORS)
_COMPRESSED_SUFFIX = _suffix_pattern(COMPRESSED)


def url_schema(literals: bool = True, compressed: bool = False,
               suffix: str = _COMPRESSED_SUFFIX) -> dict:
    """
    An http(s) URL whose host (up to 8 labels: a name; with C{literals} an
    IPv4 address or a bracketed IPv6 one too) and port the model reads
    (L{comet.model.storage.StorageModel.create_volume},
    L{comet.model.downloads.Downloads.check}).  Printable ASCII only, spelt
    out: C{\\S} is not the same set in ECMA-262 (which the document
    promises) and in Python (which the model runs).  With C{compressed}, only
    one whose path ends in C{suffix} (by default one of a compressed format).
    """
    host = rf"(?:{_LABEL}\.){{0,7}}{_LABEL if literals else _NAME_LABEL}"
    if literals:
        host = rf"(?:{host}|\[{_IPV6}\])"
    rest = (rf"/{_PATH_CHAR}*{suffix}(?:[?#][!-~]*)?" if compressed
            else r"(?:[/?#][!-~]*)?")
    return {
        "type": "string",
        "maxLength": 4096,
        "pattern": rf"^https?://(?:[A-Za-z0-9._~%!$&'()*+,;=:-]*@)?{host}"
                   rf"(?::(?:{_PORT})?)?{rest}$",
        "description": "url must be an http or https URL with a host name"
                       + (", an IPv4 address or a bracketed IPv6 one" if literals else "")
                       + " and an optional port"
                       + (f", its path ending in {suffix}" if compressed else ""),
    }


URL = url_schema()
#: A URL whose path's suffix says a compressed format.
COMPRESSED_URL = url_schema(compressed=True)
#: Anything whose path (between the authority and C{?} or C{#}) has such a suffix.
_HAS_COMPRESSED_SUFFIX = rf"^[^/?#]*//[^/?#]*/[^?#]*{_COMPRESSED_SUFFIX}(?:[?#]|$)"
#: A URL whose path's suffix says qcow2.
QCOW2_URL = url_schema(compressed=True, suffix=_suffix_pattern(("qcow2",)))


def _without(*fields: str) -> dict:
    return {"not": {"anyOf": [{"required": [f]} for f in fields]}}


def _format_is(*formats: str) -> dict:
    return {"required": ["format"], "properties": {"format": enum(*formats)}}


#: No format given: the URL's suffix says it.
_NO_FORMAT = {"not": {"required": ["format"]}}


def _all(*schemas: dict) -> dict:
    return {"allOf": list(schemas)}


#: The body of C{POST …/storagevolumes}.
VOLUME_CREATE = {
    **obj(("name",), name=NAME, capacity=CAPACITY, url=URL, format=enum(*FORMATS),
          sha256={"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}),
    "anyOf": [
        # Empty.
        _all({"required": ["capacity"]}, _without("url", "format", "sha256")),
        # A raw or qcow2 image: sized from its length (or virtual size).
        _all({"required": ["url"]}, _without("capacity"),
             _format_is(*(f for f in FORMATS if f not in COMPRESSED))),
        _all({"required": ["url"]}, _without("capacity"), _NO_FORMAT,
             {"properties": {"url": {"not": {"pattern": _HAS_COMPRESSED_SUFFIX}}}}),
        # A compressed image: its size once decompressed given; a qcow2 one: at least so large.
        _all({"required": ["url", "capacity"]}, _format_is(*COMPRESSED, "qcow2")),
        _all({"required": ["url", "capacity"]}, _NO_FORMAT, {"properties": {"url": COMPRESSED_URL}}),
        _all({"required": ["url", "capacity"]}, _NO_FORMAT, {"properties": {"url": QCOW2_URL}}),
    ],
    "description": "give 'capacity' (GB) for an empty volume, or 'url' for an image;"
                   " a compressed image (format gzip, xz or zstd, by default from the URL"
                   " path's suffix .gz, .xz, .zst) needs both: give capacity, its size once"
                   " decompressed; a qcow2 image (format qcow2 or the suffix .qcow2, .qcow)"
                   " may give capacity, the volume then at least so large (capacity goes"
                   " with url only for a compressed image, or a qcow2 one); 'format' and"
                   " 'sha256' go with url",
}
