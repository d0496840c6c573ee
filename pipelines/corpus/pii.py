"""PII redaction for corpus text: e-mail addresses, IPv4/IPv6 addresses and API-key-like
secrets become ``<EMAIL>``, ``<IP>``, ``<SECRET>``, counted per kind."""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter

from infra.redaction import KNOWN_SECRETS

EMAIL_TOKEN, IP_TOKEN, SECRET_TOKEN = "<EMAIL>", "<IP>", "<SECRET>"

EMAIL_PATTERN = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,24}(?![\w-])"
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"  # 0-255, no leading zeros (01 is a version)
# Four octets, not part of a longer dotted run (1.2.3.4.5) nor glued to a word (v1.2.3.4) or an
# anchor ("#section-3.4.1.2").
_IPV4 = re.compile(rf"(?<![\w.-]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")
# Words just before four dotted numbers that make them a version or a section, not an address.
_NOT_AN_IP_CONTEXT = re.compile(r"(?i)(?:version|python|release|section|§|[=<>~]=)\s*$")
# IPv6 candidates: hex groups and colons, optionally an IPv4 tail and a %zone; each candidate
# is then validated by the ipaddress module — see _redact_ipv6 for what else it must satisfy.
_IPV6_CANDIDATE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?:%[0-9A-Za-z]+)?(?![\w:]|\.\w)"
)

# Any other long token in the base64/url-safe alphabet, not part of a URL or dotted name; an
# optional "key=" prefix is kept and only the value judged. The value is a secret when it is at
# least 32 characters long and looks random (see _looks_random).
# Consequence, on purpose: hex digests (git SHAs, sha256 sums, UUIDs) are NOT redacted — they
# have no upper case, are public identifiers rather than credentials, and docs cite them often.
_LONG_TOKEN = re.compile(
    r"(?<![\w+/=.:-])([A-Za-z_][\w-]*=)?([A-Za-z0-9+/=_-]{32,})(?![\w+/=-]|\.\w)"
)
_KEY_PREFIX = re.compile(r"[A-Za-z_][\w-]*=")
_MIN_SECRET_CHARS = 32  # characters; API keys are 32-64, shorter random ids are rarely secrets
_MIN_CLASS_SWITCH_RATE = 0.45  # random base62: ~0.62 (5th percentile 0.48); CamelCase/paths ~0.3
_MIN_TOKEN_ENTROPY = 4.0  # bits/char; random base62 of 32 chars: 4.3-4.9


def _char_class(c: str) -> int:
    return 0 if c.isupper() else 1 if c.islower() else 2 if c.isdigit() else 3


def _looks_random(token: str) -> bool:
    """Mixes upper case, lower case and digits, and switches between those classes as often as
    a random string does: identifiers (``HintSignPep484585Generic``) and URL paths are made of
    words, so they switch rarely and hold long lower-case runs."""
    if len(token) < _MIN_SECRET_CHARS:
        return False
    upper = sum(c.isupper() for c in token)
    lower = sum(c.islower() for c in token)
    digits = sum(c.isdigit() for c in token)
    if upper < 2 or lower < 2 or digits < 1:
        return False
    if max((len(run) for run in re.findall(r"[a-z]+", token)), default=0) >= 8:
        return False
    classes = [_char_class(c) for c in token]
    switches = sum(a != b for a, b in zip(classes, classes[1:], strict=False)) / (len(token) - 1)
    if switches < _MIN_CLASS_SWITCH_RATE:
        return False
    counts = Counter(token)
    entropy = -sum(c / len(token) * math.log2(c / len(token)) for c in counts.values())
    return entropy >= _MIN_TOKEN_ENTROPY


def _redact_ipv4(text: str) -> tuple[str, int]:
    """IPv4 addresses → <IP>, unless the words just before say it is a version or a section
    ("Python 3.11.7.1", "pkg==1.2.3.4", "section 3.4.1.2"): those fit the IPv4 shape too."""
    n = 0

    def repl(match: re.Match) -> str:
        nonlocal n
        if _NOT_AN_IP_CONTEXT.search(text, max(0, match.start() - 16), match.start()):
            return match.group()
        n += 1
        return IP_TOKEN

    return _IPV4.sub(repl, text), n


def _redact_ipv6(text: str) -> tuple[str, int]:
    """IPv6 addresses → <IP>. A candidate must parse as an address, hold at least two groups
    and a digit, and have three groups, a hex letter or a 4-digit group: that keeps slices
    (``x[::2]``, ``a[2::2]``), C++/Rust paths (``std::vec``), hex-word pairs (``dead::beef``)
    and clock times (``12:30:45``) out, while ``fe80::1`` and ``2001:db8::ff00:42:8329`` go."""
    n = 0

    def repl(match: re.Match) -> str:
        nonlocal n
        candidate = match.group()
        address = candidate.split("%", 1)[0]
        groups = [g for g in address.split(":") if g]
        if len(groups) < 2 or not re.search(r"\d", address):
            return candidate
        if len(groups) < 3 and not re.search(r"[A-Fa-f]", address) and max(map(len, groups)) < 4:
            return candidate
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return candidate
        n += 1
        return IP_TOKEN

    return _IPV6_CANDIDATE.sub(repl, text), n


def redact_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace PII by placeholders; return the text and per-kind counts
    ``{"email": n, "ip": n, "secret": n}``.

    Order: secrets first (a PEM block or token may contain anything), then e-mails, then IPv6
    (whose IPv4-mapped form ``::ffff:1.2.3.4`` must go whole), then IPv4.
    IPv4 needs exactly four dotted octets 0-255 standing alone: ``1.2.3``, ``v3.11.7.1``,
    ``1.2.3.4.5`` and ``1.02.3.4`` are left alone, ``127.0.0.1`` is an IP and is redacted.
    """
    text, n_known = KNOWN_SECRETS.subn(SECRET_TOKEN, text)
    n_long = 0

    def long_token(match: re.Match) -> str:
        nonlocal n_long
        key, value = match.group(1) or "", match.group(2)
        if not key and (split := _KEY_PREFIX.match(value)):  # a short value after "key="
            key, value = split.group(), value[split.end() :]
        if _looks_random(value):
            n_long += 1
            return key + SECRET_TOKEN
        return match.group()

    text = _LONG_TOKEN.sub(long_token, text)
    text, n_email = EMAIL_PATTERN.subn(EMAIL_TOKEN, text)
    text, n_ip6 = _redact_ipv6(text)
    text, n_ip4 = _redact_ipv4(text)
    return text, {"email": n_email, "ip": n_ip4 + n_ip6, "secret": n_known + n_long}
