"""The DNS records a sending domain publishes, and checking them.

Records to publish (``records_to_publish``): the DKIM key of each selector, an SPF
include, a DMARC policy and the return-path (bounce) subdomain. The SPF host is derived
from the instance's bounce domain (``bounces.mail.example.net`` → ``mail.example.net``);
operators who send through other hosts adapt the suggestion.

Checking (``check_records``) asks a :class:`DnsLookup`. Only a proven absence makes a
record ``missing``: a resolver that times out, fails or merely *claims* NXDOMAIN without
the zone's SOA in its answer (RFC 2308: an authoritative negative answer carries it) makes
the record ``unknown``. A record that is there with the wrong value is ``invalid``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver

from postroom.delivery.dkim import dkim_dns_name, dkim_dns_record

RecordStatus = Literal["unknown", "verified", "missing", "invalid"]
Purpose = Literal["dkim", "spf", "dmarc", "return_path"]

DEFAULT_TIMEOUT = 2.0
# Providers limit one TXT character-string to 255 octets; longer values are published as
# several strings in one record, which receivers join without separators.
TXT_CHUNK = 255


class NameMissing(Exception):
    """The name (or the record type at that name) provably does not exist."""


class LookupUnavailable(Exception):
    """No trustworthy answer: no resolver, a timeout, SERVFAIL, an unproven NXDOMAIN."""


class DnsLookup(Protocol):
    """What a check needs from DNS. Each method raises :class:`NameMissing` or
    :class:`LookupUnavailable` instead of returning nothing."""

    async def txt(self, name: str) -> list[str]:
        """Every TXT record at ``name``, each with its strings joined."""
        ...

    async def cname(self, name: str) -> str:
        """The CNAME target of ``name``, lower-case, without the trailing dot."""
        ...

    async def mx(self, name: str) -> list[str]:
        """The MX hosts of ``name``, lower-case, without the trailing dot."""
        ...


# --- records to publish ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DnsRecord:
    purpose: Purpose
    type: Literal["TXT", "CNAME", "MX"]
    name: str
    value: str
    chunks: list[str] = field(default_factory=list)
    selector: str | None = None


@dataclass(frozen=True, slots=True)
class KeyRecordInput:
    selector: str
    public_key: str


def split_txt(value: str, size: int = TXT_CHUNK) -> list[str]:
    return [value[i : i + size] for i in range(0, len(value), size)] or [""]


def spf_host(bounce_domain: str) -> str:
    """The host an SPF ``include:`` names: the parent of the instance's bounce domain."""
    parent = bounce_domain.partition(".")[2]
    return parent if "." in parent else bounce_domain


def spf_value(include_host: str) -> str:
    return f"v=spf1 include:{include_host} ~all"


def dmarc_value(domain: str) -> str:
    return f"v=DMARC1; p=none; rua=mailto:dmarc@{domain}"


def dkim_record(domain: str, key: KeyRecordInput) -> DnsRecord:
    value = dkim_dns_record(key.public_key)
    return DnsRecord(
        purpose="dkim",
        type="TXT",
        name=dkim_dns_name(key.selector, domain),
        value=value,
        chunks=split_txt(value),
        selector=key.selector,
    )


def records_to_publish(
    domain: str, return_path_domain: str, keys: Sequence[KeyRecordInput], bounce_domain: str
) -> list[DnsRecord]:
    spf = spf_value(spf_host(bounce_domain))
    dmarc = dmarc_value(domain)
    return [
        *(dkim_record(domain, key) for key in keys),
        DnsRecord("spf", "TXT", domain, spf, split_txt(spf)),
        DnsRecord("dmarc", "TXT", f"_dmarc.{domain}", dmarc, split_txt(dmarc)),
        DnsRecord("return_path", "CNAME", return_path_domain, bounce_domain.lower()),
    ]


# --- checking -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordCheck:
    status: RecordStatus
    found: list[str]
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"status": self.status, "found": self.found, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class DomainCheck:
    spf: RecordCheck
    dmarc: RecordCheck
    return_path: RecordCheck
    dkim: dict[str, RecordCheck]  # by selector


def _tags(record: str) -> dict[str, str]:
    """``k=v; k=v`` tags (DKIM, DMARC), names lower-cased, whitespace removed from values."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = re.sub(r"\s+", "", value)
    return tags


async def _txt(lookup: DnsLookup, name: str) -> tuple[RecordStatus | None, list[str], str]:
    """TXT values, or a final status when there is nothing to judge."""
    try:
        return None, await lookup.txt(name), ""
    except NameMissing:
        return "missing", [], f"no TXT record at {name}"
    except LookupUnavailable as error:
        return "unknown", [], f"could not look up {name}: {error}"


async def check_spf(lookup: DnsLookup, domain: str, include_host: str) -> RecordCheck:
    status, values, detail = await _txt(lookup, domain)
    if status is not None:
        return RecordCheck(status, [], detail)
    spf = [v for v in values if v.lower().split(" ", 1)[0] == "v=spf1"]
    if not spf:
        return RecordCheck("missing", [], f"no SPF (v=spf1) record at {domain}")
    if len(spf) > 1:
        return RecordCheck("invalid", spf, "several SPF records: receivers reject them all")
    terms = spf[0].lower().split()
    if f"include:{include_host.lower()}" in terms:
        return RecordCheck("verified", spf, "")
    return RecordCheck("invalid", spf, f"the SPF record does not include:{include_host}")


async def check_dmarc(lookup: DnsLookup, domain: str) -> RecordCheck:
    name = f"_dmarc.{domain}"
    status, values, detail = await _txt(lookup, name)
    if status is not None:
        return RecordCheck(status, [], detail)
    dmarc = [v for v in values if _tags(v).get("v", "").upper() == "DMARC1"]
    if not dmarc:
        return RecordCheck("missing", [], f"no DMARC (v=DMARC1) record at {name}")
    if len(dmarc) > 1:
        return RecordCheck("invalid", dmarc, "several DMARC records: receivers ignore them all")
    if _tags(dmarc[0]).get("p", "").lower() not in ("none", "quarantine", "reject"):
        return RecordCheck("invalid", dmarc, "the DMARC record has no valid p= policy")
    return RecordCheck("verified", dmarc, "")


async def check_dkim(lookup: DnsLookup, domain: str, key: KeyRecordInput) -> RecordCheck:
    name = dkim_dns_name(key.selector, domain)
    status, values, detail = await _txt(lookup, name)
    if status is not None:
        return RecordCheck(status, [], detail)
    keys = [v for v in values if "p" in _tags(v)]
    if not keys:
        return RecordCheck("invalid", values, f"the TXT record at {name} is not a DKIM key")
    if any(_tags(v)["p"] == key.public_key for v in keys):
        return RecordCheck("verified", keys, "")
    return RecordCheck("invalid", keys, f"the key at {name} is not this domain's key")


async def check_return_path(lookup: DnsLookup, name: str, bounce_domain: str) -> RecordCheck:
    """A CNAME to the bounce host, or MX records naming it, both verify."""
    target = bounce_domain.lower()
    try:
        cname = await lookup.cname(name)
    except NameMissing:
        cname = None
    except LookupUnavailable as error:
        return RecordCheck("unknown", [], f"could not look up {name}: {error}")
    if cname is not None:
        if cname == target:
            return RecordCheck("verified", [cname], "")
        return RecordCheck("invalid", [cname], f"{name} is a CNAME to {cname}, not {target}")
    try:
        hosts = await lookup.mx(name)
    except NameMissing:
        return RecordCheck("missing", [], f"no CNAME or MX record at {name}")
    except LookupUnavailable as error:
        return RecordCheck("unknown", [], f"could not look up {name}: {error}")
    if target in hosts:
        return RecordCheck("verified", hosts, "")
    return RecordCheck("invalid", hosts, f"the MX records of {name} do not name {target}")


async def check_records(
    lookup: DnsLookup,
    domain: str,
    return_path_domain: str,
    keys: Sequence[KeyRecordInput],
    bounce_domain: str,
) -> DomainCheck:
    """Every record at once: the check takes as long as its slowest lookup."""
    spf, dmarc, return_path, *dkim = await asyncio.gather(
        check_spf(lookup, domain, spf_host(bounce_domain)),
        check_dmarc(lookup, domain),
        check_return_path(lookup, return_path_domain, bounce_domain),
        *(check_dkim(lookup, domain, key) for key in keys),
    )
    return DomainCheck(
        spf=spf,
        dmarc=dmarc,
        return_path=return_path,
        dkim={key.selector: result for key, result in zip(keys, dkim, strict=True)},
    )


# --- the real resolver ---------------------------------------------------------------------


def _proves_absence(response: dns.message.Message | None) -> bool:
    """A negative answer counts only with the zone's SOA in its authority section."""
    if response is None:
        return False
    return any(rrset.rdtype == dns.rdatatype.SOA for rrset in response.authority)


def _host(name: object) -> str:
    return str(name).rstrip(".").lower()


class DnsPythonLookup:
    """:class:`DnsLookup` over dnspython, with a short overall timeout per query.

    ``nameservers``/``port`` override the system's resolver (tests point them at a DNS
    server on the loopback)."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        nameservers: Sequence[str] | None = None,
        port: int = 53,
    ) -> None:
        self.timeout = timeout
        self.nameservers = list(nameservers) if nameservers else None
        self.port = port
        self._resolver: dns.asyncresolver.Resolver | None = None

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            try:
                resolver = dns.asyncresolver.Resolver(configure=self.nameservers is None)
            except (dns.exception.DNSException, OSError) as error:
                raise LookupUnavailable(f"no DNS resolver is configured ({error})") from None
            if self.nameservers is not None:
                resolver.nameservers = self.nameservers
                resolver.port = self.port
            resolver.timeout = self.timeout
            resolver.lifetime = self.timeout
            self._resolver = resolver
        return self._resolver

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer:
        resolver = self._get_resolver()
        qname = dns.name.from_text(name)
        try:
            answer = await resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as error:
            if any(_proves_absence(r) for r in error.kwargs.get("responses", {}).values()):
                raise NameMissing(name) from None
            raise LookupUnavailable("the resolver said NXDOMAIN without proof (no SOA)") from None
        except dns.exception.Timeout:
            raise LookupUnavailable(f"no answer within {self.timeout:g} s") from None
        except dns.resolver.NoNameservers:
            raise LookupUnavailable("every name server failed (SERVFAIL or refused)") from None
        except (dns.exception.DNSException, OSError) as error:
            raise LookupUnavailable(str(error) or type(error).__name__) from None
        if answer.rrset is None:
            if _proves_absence(answer.response):
                raise NameMissing(name)
            raise LookupUnavailable("an empty answer without proof (no SOA)")
        return answer

    async def txt(self, name: str) -> list[str]:
        answer = await self._query(name, dns.rdatatype.TXT)
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]

    async def cname(self, name: str) -> str:
        answer = await self._query(name, dns.rdatatype.CNAME)
        return _host(next(iter(answer)).target)

    async def mx(self, name: str) -> list[str]:
        answer = await self._query(name, dns.rdatatype.MX)
        return sorted(_host(rdata.exchange) for rdata in answer)
