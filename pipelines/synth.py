"""Synthetic fine-tuning data: CREATE TABLE statements and their documentation, Alpaca-formatted.

The fine-tuning stage teaches a small model to document a database table from its DDL (the seed
case study: ~3,600 synthetic examples). This module makes those examples without any outside
service, in four steps:

1. :func:`generate_tables` draws an industry (a 6-digit NAICS 2022 code, sector first so every
   sector is represented), a table archetype that fits it (orders, claims, sensor_readings, …)
   and a subset of the archetype's column pool, then renders a CREATE TABLE statement. Industry
   flavour comes from the code (a hospital's claims carry diagnosis codes, an insurer's carry
   policy numbers; "customers" become patients, tenants, policyholders) and from the title (an
   optional table-name prefix such as ``dentist_claims``). Table ``i`` depends only on
   ``(seed, i)``, so the same seed gives byte-identical output and a smaller ``n`` is a prefix.
2. A teacher writes the target: :class:`RuleTeacher` (deterministic templates over column
   semantics: keys, dates, amounts, status codes, units, …) or :class:`LLMTeacher` (any object
   with ``generate(prompts, params)``; columns its reply misses are filled by the rule teacher
   and counted). Targets only use what the DDL shows, so a model can learn them.
3. :func:`split_by_family` holds out whole families — (archetype, NAICS sector) — so the test
   set measures generalisation to unseen kinds of tables, not memorised ones.
4. :func:`write_tabledoc_examples` writes silver/tabledoc_examples through the lake's quality
   gate; each row checks its own response format.

:func:`load_instruction_dataset` brings any other instruction data set (jsonl, parquet, a
``datasets`` save_to_disk folder) into the same Alpaca template.

Provenance: pipelines/data/naics_2022.csv is the U.S. Census Bureau's "2-6 digit_2022_Codes.xlsx"
(public domain), reduced to code,title for all 2,125 codes.
"""
from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field, field_validator

from infra.lake import TableSpec, expect

NAICS_FILE = Path(__file__).resolve().parent / "data" / "naics_2022.csv"

# ---------------------------------------------------------------------------------------------
# Alpaca template (the seed's own, "### End" included)
# ---------------------------------------------------------------------------------------------

PREAMBLE = ("Below is an instruction that describes a task. "
            "Write a response that appropriately completes the request.")
INSTRUCTION_MARKER = "### Instruction:"
RESPONSE_MARKER = "### Response:"
END_MARKER = "### End"
TABLEDOC_TASK = ("Write documentation for the database table defined below: a description of "
                 "one to three sentences, then one comment per column, in table order.")


def prompt_of(instruction: str) -> str:
    """What a model sees at inference: the template up to and including the response marker."""
    return f"{PREAMBLE}\n\n{INSTRUCTION_MARKER}\n{instruction}\n\n{RESPONSE_MARKER}\n"


def format_example(instruction: str, response: str) -> str:
    return f"{prompt_of(instruction)}{response}\n\n{END_MARKER}"


def tabledoc_instruction(ddl: str) -> str:
    return f"{TABLEDOC_TASK}\n\n{ddl}"


# ---------------------------------------------------------------------------------------------
# Industries (NAICS 2022, loaded lazily) and their domain words
# ---------------------------------------------------------------------------------------------

# NAICS sectors that span several 2-digit codes: a family is keyed by the sector, not the digits
_SECTOR_OF_DIGITS = {"31": "31-33", "32": "31-33", "33": "31-33", "44": "44-45", "45": "44-45",
                     "48": "48-49", "49": "48-49"}


@dataclass(frozen=True)
class Industry:
    code: str  # 6-digit NAICS code
    title: str
    sector: str  # "62", "31-33", …


def sector_of(code: str) -> str:
    return _SECTOR_OF_DIGITS.get(code[:2], code[:2])


@lru_cache(maxsize=1)
def naics_titles() -> dict[str, str]:
    """code -> title for every NAICS 2022 code (2 to 6 digits; sectors like "31-33" kept)."""
    with NAICS_FILE.open(newline="", encoding="utf-8") as f:
        return {row["code"]: row["title"] for row in csv.DictReader(f)}


@lru_cache(maxsize=1)
def industries_by_sector() -> dict[str, tuple[Industry, ...]]:
    by_sector: dict[str, list[Industry]] = {}
    for code, title in naics_titles().items():
        if len(code) == 6 and code.isdigit():
            by_sector.setdefault(sector_of(code), []).append(Industry(code, title,
                                                                      sector_of(code)))
    return {s: tuple(v) for s, v in sorted(by_sector.items())}


# What "customer", "item" and "site" are called in each sector (a 3-digit subsector may refine
# it): the column and table names a real schema in that industry would use.
_VOCAB_DEFAULT = {"customer": "customer", "item": "product", "site": "site", "claim": "claim"}
_VOCAB = {
    "11": {"customer": "buyer", "item": "crop", "site": "farm"},
    "21": {"customer": "buyer", "item": "commodity", "site": "mine"},
    "22": {"customer": "ratepayer", "item": "tariff", "site": "substation"},
    "23": {"customer": "client", "item": "material", "site": "jobsite"},
    "31-33": {"item": "part", "site": "plant", "claim": "warranty claim"},
    "42": {"customer": "reseller", "site": "warehouse"},
    "44-45": {"site": "store", "claim": "return claim"},
    "48-49": {"customer": "shipper", "item": "service_level", "site": "terminal",
              "claim": "freight claim"},
    "51": {"customer": "subscriber", "item": "plan", "site": "data_center"},
    "52": {"customer": "client", "item": "account_type", "site": "branch"},
    "522": {"customer": "borrower", "item": "loan_product"},
    "523": {"customer": "investor", "item": "security"},
    "524": {"customer": "policyholder", "item": "policy_type", "claim": "insurance claim"},
    "53": {"customer": "tenant", "item": "unit", "site": "property"},
    "54": {"customer": "client", "item": "service", "site": "office"},
    "55": {"customer": "subsidiary", "item": "service", "site": "office"},
    "56": {"customer": "client", "item": "service", "site": "facility"},
    "61": {"customer": "student", "item": "course", "site": "campus"},
    "62": {"customer": "patient", "item": "procedure", "site": "clinic", "claim": "medical claim"},
    "622": {"site": "ward"},
    "623": {"customer": "resident", "site": "facility"},
    "624": {"customer": "client", "item": "program", "site": "center"},
    "71": {"customer": "member", "item": "ticket_type", "site": "venue"},
    "72": {"customer": "guest", "item": "menu_item", "site": "restaurant"},
    "721": {"item": "room_type", "site": "property"},
    "81": {"customer": "client", "item": "service", "site": "shop"},
    "92": {"customer": "resident", "item": "permit_type", "site": "office",
           "claim": "benefit claim"},
}


def plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def vocabulary(industry: Industry) -> dict[str, str]:
    words = {**_VOCAB_DEFAULT, **_VOCAB.get(industry.sector, {}),
             **_VOCAB.get(industry.code[:3], {})}
    words.update({f"{k}s": plural(v) for k, v in list(words.items())})
    return words


# Title words that say nothing about the domain ("Other", "Manufacturing") or only qualify the
# next word ("Crude Petroleum"): skipped or joined so the prefix reads like a real schema's.
_TITLE_STOPWORDS = frozenset("""and of the for in on except other all miscellaneous general new
    used related support activities services service industries industry establishments
    operations manufacturing farming stores retailers offices merchant wholesalers wholesale
    product products dealers specialty specialized commercial contractors combination similar
    mills mill providers agencies including primary direct administration""".split())
_QUALIFIER_ENDINGS = ("ed", "ic", "al", "ary", "ous", "ive", "ial")
_QUALIFIERS = frozenset({"dry", "crude", "home", "motor", "basic", "commuter", "fresh", "frozen",
                         "performing", "child", "family"})


def industry_prefix(title: str) -> str:
    """A table-name prefix from a NAICS title: "Offices of Dentists" -> "dentist"."""
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", re.sub(r"\([^)]*\)", "", title))]
    words = [w for w in words if w not in _TITLE_STOPWORDS and len(w) > 2]
    if not words:
        return ""  # "All Other Miscellaneous Retailers": nothing worth a prefix
    first = words[0]
    if (first in _QUALIFIERS or first.endswith(_QUALIFIER_ENDINGS)) and len(words) > 1:
        first = f"{first}_{words[1]}" if len(first) + len(words[1]) < 24 else first
    if first.endswith(("ists", "ers", "ors", "ians", "als", "ools", "eges")):
        first = first[:-1]  # dentists -> dentist: prefixes are singular
    return first


# ---------------------------------------------------------------------------------------------
# Table archetypes and their column pools
# ---------------------------------------------------------------------------------------------
# One column per string: "name TYPE[|TYPE…] [flags] [#DDL comment]". Flags: pk (primary key),
# req (always present, NOT NULL), null (nullable), fk=<archetype>, in=a|b (allowed values,
# sometimes a CHECK), s=<sector or subsector>,… (only in those industries). {customer}, {site},
# {item} are the industry's words. Optional columns are drawn with OPTIONAL_RATE.


@dataclass(frozen=True)
class Archetype:
    name: str
    table: str  # template of the table name
    entity: str  # what one row is
    purpose: str  # "one row per …", completes "The x table holds …"
    columns: tuple[str, ...]
    sectors: frozenset[str] | None = None  # sectors or subsectors it fits; None = all


def _archetype(name, table, entity, purpose, columns, sectors=None) -> Archetype:
    return Archetype(name, table, entity, purpose, tuple(columns),
                     frozenset(sectors.split(",")) if sectors else None)


ARCHETYPES: tuple[Archetype, ...] = (
    _archetype("customers", "{customers}", "{customer}",
               "one row per {customer}, with contact details and status", [
        "{customer}_id BIGINT|INT pk", "external_ref VARCHAR(40) null #ID in the source system",
        "full_name VARCHAR(120)|VARCHAR(200) req", "email VARCHAR(254) null",
        "phone VARCHAR(32) null", "date_of_birth DATE null s=524,61,62,71",
        "preferred_{site}_id BIGINT null fk=sites", "billing_address VARCHAR(255) null",
        "postal_code VARCHAR(10) null", "country_code CHAR(2) #ISO 3166-1 alpha-2",
        "loyalty_tier VARCHAR(12) in=bronze|silver|gold s=44-45,71,72",
        "credit_limit DECIMAL(12,2)|DECIMAL(14,2) null s=23,31-33,42,522",
        "is_tax_exempt BOOLEAN s=23,31-33,42",
        "status VARCHAR(16) req in=active|inactive|suspended", "created_at TIMESTAMP req",
        "updated_at TIMESTAMP null"]),
    _archetype("suppliers", "suppliers", "supplier", "one row per approved supplier", [
        "supplier_id BIGINT|INT pk", "supplier_name VARCHAR(160) req",
        "tax_number VARCHAR(20) null #tax registration number", "contact_email VARCHAR(254) null",
        "payment_terms_days INT #days allowed before payment is due", "currency_code CHAR(3)",
        "lead_time_days INT null", "rating DECIMAL(3,2) null #score from 0 to 5",
        "is_preferred BOOLEAN", "status VARCHAR(16) req in=approved|on_hold|blocked",
        "created_at TIMESTAMP req"]),
    _archetype("employees", "employees", "employee", "one row per employee", [
        "employee_id BIGINT|INT pk", "first_name VARCHAR(60) req", "last_name VARCHAR(80) req",
        "email VARCHAR(254) null", "job_title VARCHAR(80)", "department_code VARCHAR(10) null",
        "{site}_id BIGINT null fk=sites", "manager_id BIGINT null #employee ID of the line manager",
        "hire_date DATE req", "termination_date DATE null",
        "hourly_rate DECIMAL(8,2) null s=11,23,44-45,56,72,81",
        "annual_salary DECIMAL(12,2) null", "license_number VARCHAR(30) null s=23,54,62",
        "cdl_class CHAR(1) null s=48-49 #commercial driver licence class",
        "is_active BOOLEAN req", "created_at TIMESTAMP"]),
    _archetype("products", "{items}", "{item}", "one row per {item} on offer", [
        "{item}_id BIGINT|INT pk", "{item}_code VARCHAR(30)|VARCHAR(40) req",
        "{item}_name VARCHAR(160) req", "description VARCHAR(500)|TEXT null",
        "category VARCHAR(60) null", "unit_of_measure VARCHAR(10) #for example EA, KG, L",
        "unit_price DECIMAL(10,2)|DECIMAL(12,4)", "standard_cost DECIMAL(10,2) null",
        "currency_code CHAR(3)", "weight_kg DECIMAL(10,3) null s=11,21,31-33,42,44-45",
        "supplier_id BIGINT null fk=suppliers", "is_active BOOLEAN req",
        "created_at TIMESTAMP", "updated_at TIMESTAMP null"]),
    _archetype("sites", "{sites}", "{site}", "one row per {site} the business operates", [
        "{site}_id BIGINT|INT pk", "{site}_name VARCHAR(120) req", "address_line VARCHAR(255)",
        "city VARCHAR(80)", "region_code VARCHAR(8) null", "country_code CHAR(2)",
        "latitude DECIMAL(9,6) null", "longitude DECIMAL(9,6) null",
        "floor_area_m2 DECIMAL(12,2) null", "manager_id BIGINT null fk=employees",
        "opened_on DATE null", "is_active BOOLEAN req"]),
    _archetype("assets", "assets", "asset", "one row per piece of equipment at a {site}", [
        "asset_id BIGINT|INT pk", "asset_tag VARCHAR(30) req #tag printed on the equipment",
        "asset_type VARCHAR(40) req", "manufacturer VARCHAR(80) null", "model VARCHAR(80) null",
        "serial_number VARCHAR(60) null", "{site}_id BIGINT req fk=sites",
        "purchase_date DATE null", "purchase_cost DECIMAL(14,2) null",
        "warranty_end_date DATE null", "rated_power_kw DECIMAL(10,2) null s=21,22,31-33",
        "status VARCHAR(16) req in=in_service|under_repair|retired", "created_at TIMESTAMP"],
        "11,21,22,23,31-33,42,48-49,51,53,56,62,71,72"),
    _archetype("orders", "orders", "order", "one row per order placed by a {customer}", [
        "order_id BIGINT pk", "order_number VARCHAR(20) req",
        "{customer}_id BIGINT req fk=customers", "{site}_id BIGINT null fk=sites",
        "order_date DATE req", "requested_delivery_date DATE null",
        "status VARCHAR(20) req in=pending|confirmed|shipped|delivered|cancelled",
        "currency_code CHAR(3)", "subtotal_amount DECIMAL(12,2) req", "tax_amount DECIMAL(12,2)",
        "shipping_amount DECIMAL(10,2) null s=31-33,42,44-45,48-49",
        "total_amount DECIMAL(12,2) req", "sales_rep_id BIGINT null fk=employees",
        "channel VARCHAR(12) null in=web|phone|store|edi", "created_at TIMESTAMP req",
        "updated_at TIMESTAMP null"],
        "11,21,22,23,31-33,42,44-45,48-49,51,54,56,72,81"),
    _archetype("order_lines", "order_lines", "order line", "one row per line of an order", [
        "order_id BIGINT pk fk=orders", "line_number INT pk", "{item}_id BIGINT req fk=products",
        "quantity DECIMAL(12,3)|INT req #quantity ordered", "unit_price DECIMAL(12,4) req",
        "discount_pct DECIMAL(5,2) null", "line_amount DECIMAL(14,2) req",
        "tax_code VARCHAR(10) null", "promised_date DATE null",
        "status VARCHAR(12) in=open|allocated|shipped|cancelled",
        "weight_kg DECIMAL(10,3) null s=31-33,42,48-49"],
        "11,21,22,23,31-33,42,44-45,48-49,51,54,56,72,81"),
    _archetype("inventory", "inventory", "stock record",
               "the stock on hand of each {item} at each {site}", [
        "inventory_id BIGINT pk", "{item}_id BIGINT req fk=products",
        "{site}_id BIGINT req fk=sites", "bin_location VARCHAR(20) null",
        "lot_number VARCHAR(30) null s=11,31-33,42,62", "quantity_on_hand DECIMAL(14,3)|INT req",
        "quantity_reserved DECIMAL(14,3)|INT", "reorder_point INT null #level that triggers "
        "replenishment", "unit_cost DECIMAL(12,4) null",
        "expiry_date DATE null s=11,31-33,42,44-45,62,72", "last_counted_at TIMESTAMP null",
        "updated_at TIMESTAMP req"], "11,21,23,31-33,42,44-45,48-49,62,72"),
    _archetype("invoices", "invoices", "invoice", "one row per invoice sent to a {customer}", [
        "invoice_id BIGINT pk", "invoice_number VARCHAR(24) req",
        "{customer}_id BIGINT req fk=customers", "order_id BIGINT null fk=orders",
        "invoice_date DATE req", "due_date DATE req", "currency_code CHAR(3) req",
        "net_amount DECIMAL(14,2) req", "tax_amount DECIMAL(14,2) req",
        "total_amount DECIMAL(14,2) req", "amount_paid DECIMAL(14,2)",
        "status VARCHAR(16) req in=draft|issued|paid|overdue|void",
        "payment_terms_days INT null", "created_at TIMESTAMP"]),
    _archetype("payments", "payments", "payment", "one row per payment received", [
        "payment_id BIGINT pk", "invoice_id BIGINT null fk=invoices",
        "{customer}_id BIGINT req fk=customers", "payment_date DATE req",
        "amount DECIMAL(14,2) req", "currency_code CHAR(3) req",
        "method VARCHAR(16) req in=card|bank_transfer|cash|check|direct_debit",
        "reference VARCHAR(64) null #bank or processor reference", "is_refund BOOLEAN",
        "status VARCHAR(12) in=pending|settled|failed|reversed", "received_at TIMESTAMP req"]),
    _archetype("shipments", "shipments", "shipment", "one row per shipment of an order", [
        "shipment_id BIGINT pk", "order_id BIGINT req fk=orders", "carrier_code VARCHAR(12)",
        "tracking_number VARCHAR(40) null", "origin_{site}_id BIGINT null fk=sites",
        "destination_postal_code VARCHAR(10)", "ship_date DATE null",
        "expected_delivery_date DATE null", "delivered_at TIMESTAMP null", "package_count INT",
        "gross_weight_kg DECIMAL(10,3)", "freight_cost DECIMAL(10,2) null",
        "is_temperature_controlled BOOLEAN s=11,31-33,42,62,72",
        "status VARCHAR(16) req in=booked|in_transit|delivered|exception",
        "created_at TIMESTAMP req"], "11,21,31-33,42,44-45,48-49,72"),
    _archetype("claims", "claims", "{claim}", "one row per {claim} filed by a {customer}", [
        "claim_id BIGINT pk", "claim_number VARCHAR(24) req",
        "{customer}_id BIGINT req fk=customers",
        "policy_number VARCHAR(30) req s=524 #policy the claim is made under",
        "loss_date DATE s=524 #date the insured loss occurred",
        "diagnosis_code VARCHAR(8) s=621,622 #ICD-10-CM diagnosis",
        "procedure_code VARCHAR(8) s=621,622 #CPT or HCPCS procedure",
        "payer_id BIGINT null s=621,622,623 #insurer billed for the claim",
        "service_date DATE s=62,92",
        "serial_number VARCHAR(60) s=31-33,44-45 #serial number of the returned unit",
        "defect_code VARCHAR(10) null s=31-33,44-45",
        "order_id BIGINT null fk=orders s=31-33,44-45,48-49",
        "shipment_id BIGINT null fk=shipments s=48-49", "program_code VARCHAR(10) s=92",
        "claimed_amount DECIMAL(14,2) req", "approved_amount DECIMAL(14,2) null",
        "reserve_amount DECIMAL(14,2) null s=524", "currency_code CHAR(3)", "filed_date DATE req",
        "status VARCHAR(16) req in=submitted|under_review|approved|denied|paid",
        "adjuster_id BIGINT null fk=employees", "closed_at TIMESTAMP null",
        "created_at TIMESTAMP req"], "31-33,44-45,48-49,524,621,622,623,92"),
    _archetype("appointments", "appointments", "appointment",
               "one row per appointment a {customer} books", [
        "appointment_id BIGINT pk", "{customer}_id BIGINT req fk=customers",
        "employee_id BIGINT null fk=employees", "{site}_id BIGINT null fk=sites",
        "scheduled_start TIMESTAMP req", "scheduled_end TIMESTAMP req", "duration_minutes INT",
        "appointment_type VARCHAR(30)", "visit_reason VARCHAR(255) null s=62",
        "room_code VARCHAR(10) null s=61,62", "is_virtual BOOLEAN",
        "status VARCHAR(16) req in=booked|checked_in|completed|no_show|cancelled",
        "cancelled_at TIMESTAMP null", "notes TEXT null", "created_at TIMESTAMP req"],
        "53,54,56,61,62,71,81,92"),
    _archetype("sensor_readings", "sensor_readings", "sensor reading",
               "one row per reading taken by a sensor on an asset", [
        "reading_id BIGINT pk", "asset_id BIGINT req fk=assets", "sensor_code VARCHAR(20) req",
        "recorded_at TIMESTAMP req", "temperature_c DECIMAL(5,2) null",
        "humidity_pct DECIMAL(5,2) null s=11,48-49,53,72",
        "soil_moisture_pct DECIMAL(5,2) null s=11",
        "vibration_mm_s DECIMAL(8,3) null s=21,22,31-33",
        "pressure_kpa DECIMAL(8,2) null s=21,22,31-33", "power_kw DECIMAL(10,3) null s=22,31-33,51",
        "energy_kwh DECIMAL(12,3) null s=22,53", "voltage_v DECIMAL(8,2) null s=22,51",
        "heart_rate_bpm INT null s=62", "spo2_pct DECIMAL(5,2) null s=62",
        "speed_km_h DECIMAL(6,2) null s=48-49", "fuel_level_pct DECIMAL(5,2) null s=48-49",
        "battery_pct DECIMAL(5,2) null", "quality_flag VARCHAR(8) null in=good|suspect|bad",
        "is_anomaly BOOLEAN", "ingested_at TIMESTAMP"], "11,21,22,31-33,48-49,51,53,62,72"),
    _archetype("maintenance_events", "maintenance_events", "maintenance event",
               "one row per inspection or repair of an asset", [
        "event_id BIGINT pk", "asset_id BIGINT req fk=assets",
        "event_type VARCHAR(20) req in=inspection|preventive|corrective|calibration",
        "reported_at TIMESTAMP req", "started_at TIMESTAMP null", "completed_at TIMESTAMP null",
        "technician_id BIGINT null fk=employees", "downtime_minutes INT null",
        "labor_hours DECIMAL(6,2) null", "parts_cost DECIMAL(12,2) null",
        "failure_code VARCHAR(10) null", "engine_hours DECIMAL(10,1) null s=21,23,48-49",
        "work_order_number VARCHAR(20)", "notes TEXT null",
        "status VARCHAR(12) req in=open|in_progress|done"],
        "11,21,22,23,31-33,48-49,51,53,56,71,72"),
)
ARCHETYPE_BY_NAME = {a.name: a for a in ARCHETYPES}
OPTIONAL_RATE = 0.6  # share of optional pool columns a table gets: tables of ~6-14 columns
DDL_COMMENT_RATE = 0.3  # a column with a known meaning carries COMMENT '…' this often
CHECK_RATE = 0.5  # a column with allowed values declares them in a CHECK this often
PREFIX_RATE = 0.5  # tables named with the industry prefix (dentist_claims) this often
HEADER_RATE = 0.5  # DDL opens with a "-- Industry: …" line this often


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    types: tuple[str, ...]
    pk: bool = False
    required: bool = False
    nullable: bool = False
    fk: str | None = None
    values: tuple[str, ...] = ()
    sectors: frozenset[str] | None = None
    note: str | None = None


@lru_cache(maxsize=None)
def parse_column_spec(line: str) -> ColumnSpec:
    head, _, note = line.partition("#")
    name, types, *flags = head.split()
    opts: dict[str, Any] = {"note": note.strip() or None}
    for flag in flags:
        key, _, value = flag.partition("=")
        if key in ("pk", "req", "null"):
            opts[{"pk": "pk", "req": "required", "null": "nullable"}[key]] = True
        elif key == "fk":
            opts["fk"] = value
        elif key == "in":
            opts["values"] = tuple(value.split("|"))
        elif key == "s":
            opts["sectors"] = frozenset(value.split(","))
        else:
            raise ValueError(f"column spec {line!r}: unknown flag {flag!r}")
    return ColumnSpec(name, tuple(types.split("|")), **opts)


def fits(industry: Industry, sectors: frozenset[str] | None) -> bool:
    return sectors is None or industry.sector in sectors or any(
        industry.code.startswith(s) for s in sectors)


# ---------------------------------------------------------------------------------------------
# Generated tables
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    nullable: bool
    primary_key: bool = False
    references: tuple[str, str] | None = None  # (table, column)
    comment: str | None = None  # only what the DDL shows
    allowed_values: tuple[str, ...] = ()  # only when the DDL declares them in a CHECK


@dataclass(frozen=True)
class SynthTable:
    index: int
    industry_code: str
    industry_title: str
    sector: str
    archetype: str
    entity: str  # what one row is, in the industry's words ("medical claim")
    purpose: str
    table_name: str
    columns: tuple[Column, ...]
    ddl: str
    industry_in_ddl: bool  # the DDL's header names the industry

    @property
    def family(self) -> str:
        """(archetype, NAICS sector): the unit train and test never share."""
        return f"{self.archetype}:{self.sector}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def generate_tables(n: int, seed: int = 0) -> list[SynthTable]:
    """n tables; table i is a pure function of (seed, i), so output is byte-identical per seed."""
    return [generate_table(i, seed) for i in range(n)]


def generate_table(index: int, seed: int) -> SynthTable:
    rng = random.Random(f"tabledoc:{seed}:{index}")  # str seeds hash with SHA-512: stable
    by_sector = industries_by_sector()
    industry = rng.choice(by_sector[rng.choice(sorted(by_sector))])  # sector first: all 20 seen
    archetype = rng.choice([a for a in ARCHETYPES if fits(industry, a.sectors)])
    words = vocabulary(industry)
    prose = {k: v.replace("_", " ") for k, v in words.items()}  # "menu item" in sentences
    prefix = industry_prefix(industry.title) if rng.random() < PREFIX_RATE else ""
    prefix = f"{prefix}_" if prefix else ""
    columns = tuple(_draw_column(spec, rng, words, prefix)
                    for spec in map(parse_column_spec, archetype.columns)
                    if fits(industry, spec.sectors) and (
                        spec.pk or spec.required or rng.random() < OPTIONAL_RATE))
    table_name = prefix + archetype.table.format(**words)
    header = rng.random() < HEADER_RATE
    ddl = render_ddl(table_name, columns, rng,
                     f"{industry.title} (NAICS {industry.code})" if header else None)
    return SynthTable(index, industry.code, industry.title, industry.sector, archetype.name,
                      archetype.entity.format(**prose), archetype.purpose.format(**prose),
                      table_name, columns, ddl, header)


def _draw_column(spec: ColumnSpec, rng: random.Random, words: dict[str, str],
                 prefix: str) -> Column:
    sql_type = rng.choice(spec.types)
    references = None
    if spec.fk:
        target = ARCHETYPE_BY_NAME[spec.fk]
        target_pk = next(parse_column_spec(c) for c in target.columns if "pk" in c.split())
        references = (prefix + target.table.format(**words), target_pk.name.format(**words))
    comment = (spec.note.format(**words) if spec.note and rng.random() < DDL_COMMENT_RATE
               else None)
    values = spec.values if spec.values and rng.random() < CHECK_RATE else ()
    return Column(spec.name.format(**words), sql_type,
                  nullable=spec.nullable and not spec.pk, primary_key=spec.pk,
                  references=references, comment=comment, allowed_values=values)


def render_ddl(table_name: str, columns: Sequence[Column], rng: random.Random,
               header: str | None = None) -> str:
    """CREATE TABLE in one of a few common house styles (inline or table-level constraints)."""
    keys = [c.name for c in columns if c.primary_key]
    inline_pk = len(keys) == 1 and rng.random() < 0.5
    inline_fk = rng.random() < 0.5
    indent = rng.choice(("    ", "  "))
    lines = []
    for c in columns:
        parts = [c.name, c.sql_type]
        if not c.nullable:
            parts.append("NOT NULL")
        if c.primary_key and inline_pk:
            parts.append("PRIMARY KEY")
        if c.allowed_values:
            values = ", ".join(_sql_str(v) for v in c.allowed_values)
            parts.append(f"CHECK ({c.name} IN ({values}))")
        if c.references and inline_fk:
            parts.append(f"REFERENCES {c.references[0]} ({c.references[1]})")
        if c.comment:
            parts.append(f"COMMENT {_sql_str(c.comment)}")
        lines.append(" ".join(parts))
    if not inline_pk:
        named = f"CONSTRAINT pk_{table_name} " if rng.random() < 0.5 else ""
        lines.append(f"{named}PRIMARY KEY ({', '.join(keys)})")
    if not inline_fk:
        lines += [f"CONSTRAINT fk_{table_name}_{c.name} FOREIGN KEY ({c.name}) "
                  f"REFERENCES {c.references[0]} ({c.references[1]})"
                  for c in columns if c.references]
    create = "CREATE TABLE IF NOT EXISTS" if rng.random() < 0.3 else "CREATE TABLE"
    body = ",\n".join(indent + line for line in lines)
    top = f"-- Industry: {header}\n" if header else ""
    return f"{top}{create} {table_name} (\n{body}\n);"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------
# Responses: "Description: …" then "- column: comment" per column, in table order
# ---------------------------------------------------------------------------------------------

_DESCRIPTION = re.compile(r"^\s*\**description\**\s*:\s*\**\s*(.*?)\s*$", re.IGNORECASE)
_COLUMN_LINE = re.compile(r"^\s*[-*•]\s+`?([A-Za-z_][\w$]*)`?\s*:\s*(.*?)\s*$")
_STRICT_COLUMN_LINE = re.compile(r"^- ([A-Za-z_][\w$]*): (\S.*)$")


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def render_response(description: str, comments: Iterable[tuple[str, str]]) -> str:
    lines = [f"Description: {one_line(description)}"]
    lines += [f"- {name}: {one_line(comment)}" for name, comment in comments]
    return "\n".join(lines)


_TABLE_CONSTRAINT = re.compile(r"^(CONSTRAINT|PRIMARY|FOREIGN|UNIQUE|CHECK|INDEX|KEY|EXCLUDE)\b",
                               re.IGNORECASE)
_CREATE_TABLE = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?TABLE\b",
                           re.IGNORECASE)


def ddl_columns(text: str) -> list[str]:
    """Column names of the first CREATE TABLE in ``text``, in order (table constraints,
    comments and quoting are skipped); raises ValueError when there is none."""
    match = _CREATE_TABLE.search(text)
    start = text.find("(", match.end()) if match else -1
    if start < 0:
        raise ValueError("no CREATE TABLE (...) statement found")
    columns = []
    for element in _top_level_elements(text[start + 1:]):
        element = re.sub(r"--[^\n]*", " ", element).strip()
        if element and not _TABLE_CONSTRAINT.match(element):
            columns.append(_identifier(element))
    if not columns:
        raise ValueError("the CREATE TABLE statement declares no columns")
    return columns


_QUOTED_IDENTIFIER = re.compile(r'^(?:"([^"]+)"|`([^`]+)`|\[([^\]]+)\])')


def _identifier(element: str) -> str:
    """The leading identifier of a column definition; quoted ones may hold spaces."""
    quoted = _QUOTED_IDENTIFIER.match(element)
    return next(g for g in quoted.groups() if g) if quoted else element.split()[0]


def _top_level_elements(body: str) -> list[str]:
    """Split a table body at commas outside parentheses, quotes and comments; stop at the
    body's closing parenthesis."""
    elements, current, depth, quote, i = [], [], 0, None, 0
    while i < len(body):
        ch = body[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif body.startswith("--", i):  # a comment runs to the line's end
            end = body.find("\n", i)
            i = len(body) if end < 0 else end
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                break
            depth -= 1
        elif ch == "," and depth == 0:
            elements.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    elements.append("".join(current))
    return elements


def response_template(columns: Sequence[str]) -> list:
    """The response layout as infra.llm fields (description, then one comment per column):
    filled field by field, a generation parses by construction."""
    from infra.llm import Field

    return [Field("description", "Description:", ["\n"], 96, joiner=" ")] + [
        Field(name, f"- {name}:", ["\n"], 64, joiner=" ") for name in columns]


def response_part(text: str) -> str:
    """The response of a full Alpaca example (or the text itself), without the end marker."""
    if RESPONSE_MARKER in text:
        text = text.split(RESPONSE_MARKER, 1)[1]
    return text.split(END_MARKER, 1)[0].strip()


def parse_response(text: str, columns: Sequence[str]) -> tuple[str, dict[str, str]]:
    """(description, {column: comment}) from a response, leniently: bullets may be * or -,
    names may be back-quoted, unknown names are ignored, the first comment for a name wins."""
    wanted = set(columns)
    description: list[str] = []
    comments: dict[str, str] = {}
    in_description = False
    for line in response_part(text).splitlines():
        if match := _COLUMN_LINE.match(line):
            in_description = False
            name, comment = match.groups()
            if name in wanted and name not in comments:
                comments[name] = comment
        elif match := _DESCRIPTION.match(line):
            in_description = not description
            description = description or [match.group(1)]
        elif in_description and line.strip():
            description.append(line.strip())  # a description wrapped over several lines
    return one_line(" ".join(description)), comments


def response_columns(response: str) -> list[str]:
    """Column names, in order, of a response's strict ``- name: comment`` lines."""
    return [m.group(1) for line in response.splitlines()
            if (m := _STRICT_COLUMN_LINE.match(line))]


def format_valid(text: str, columns: Sequence[str]) -> bool:
    """Strict: a non-empty Description line, then exactly one '- name: comment' per column,
    in table order, and nothing else (blank lines aside)."""
    lines = [line for line in response_part(text).splitlines() if line.strip()]
    if len(lines) != len(columns) + 1:
        return False
    head = _DESCRIPTION.match(lines[0])
    if not (lines[0].startswith("Description: ") and head and head.group(1)):
        return False
    for line, name in zip(lines[1:], columns):
        match = _STRICT_COLUMN_LINE.match(line)
        if not match or match.group(1) != name:
            return False
    return True


def column_coverage(text: str, columns: Sequence[str]) -> float:
    """Share of the columns that got a non-empty comment."""
    if not columns:
        return 1.0
    comments = parse_response(text, columns)[1]
    return sum(1 for c in columns if comments.get(c, "").strip()) / len(columns)


def copy_column_names_baseline(table: SynthTable) -> str:
    """The floor a model must beat: restate each column's name as its comment."""
    return render_response(f"Table {table.table_name}.",
                           [(c.name, c.name.replace("_", " ")) for c in table.columns])


# ---------------------------------------------------------------------------------------------
# Teachers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableDoc:
    description: str
    comments: dict[str, str]  # column -> comment, in table order
    fallback_columns: int = 0  # columns the rule teacher had to fill in
    fallback_description: bool = False

    def response(self, table: SynthTable) -> str:
        return render_response(self.description,
                               [(name, self.comments[name]) for name in table.column_names])


class Teacher(Protocol):
    name: str

    def document(self, tables: Sequence[SynthTable]) -> list[TableDoc]: ...


_ABBREVIATIONS = {"qty": "quantity", "amt": "amount", "pct": "percent", "num": "number",
                  "ref": "reference", "spo2": "blood oxygen saturation", "cdl": "CDL"}
# Longest first: "_mm_s" must win over "_s"; "_kwh" over "_kw"
_UNITS = {"_mm_s": "millimetres per second", "_km_h": "kilometres per hour",
          "_kwh": "kilowatt-hours", "_kw": "kilowatts", "_kpa": "kilopascals",
          "_kg": "kilograms", "_pct": "percent", "_bpm": "beats per minute",
          "_m2": "square metres", "_c": "degrees Celsius", "_v": "volts", "_days": "days",
          "_minutes": "minutes", "_hours": "hours"}
_TIME_UNITS = frozenset({"_days", "_minutes", "_hours"})
_MONEY_WORDS = frozenset("amount price cost total fee balance limit salary rate paid".split())
_GLOSSARY = {
    "email": "E-mail address of the {entity}.",
    "contact_email": "E-mail address to contact the {entity}.",
    "phone": "Telephone number of the {entity}.",
    "full_name": "Full name of the {entity}.",
    "first_name": "Given name of the {entity}.",
    "last_name": "Family name of the {entity}.",
    "description": "Free-text description of the {entity}.",
    "notes": "Free-text notes about the {entity}.",
    "latitude": "Latitude of the {entity} in decimal degrees.",
    "longitude": "Longitude of the {entity} in decimal degrees.",
    "country_code": "Country of the {entity} as a country code.",
    "currency_code": "Currency of the {entity}'s amounts as a currency code.",
    "date_of_birth": "Date of birth of the {entity}.",
    "due_date": "Date by which the {entity} must be paid.",
    "unit_of_measure": "Unit in which quantities of the {entity} are counted.",
    "postal_code": "Postal code of the {entity}'s address.",
}


def humanise(name: str) -> str:
    return " ".join(_ABBREVIATIONS.get(w, w) for w in name.split("_") if w)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _either(values: Sequence[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _decimal_scale(sql_type: str) -> int | None:
    match = re.match(r"(?:DECIMAL|NUMERIC)\(\s*\d+\s*,\s*(\d+)\s*\)", sql_type, re.IGNORECASE)
    return int(match.group(1)) if match else None


class RuleTeacher:
    """Deterministic documentation from column semantics; the default teacher."""

    name = "rule"

    def document(self, tables: Sequence[SynthTable]) -> list[TableDoc]:
        return [self.document_table(t) for t in tables]

    def document_table(self, table: SynthTable) -> TableDoc:
        return TableDoc(self.describe_table(table),
                        {c.name: self.describe_column(c, table) for c in table.columns})

    def describe_table(self, table: SynthTable) -> str:
        where = (f" in the {table.industry_title} industry (NAICS {table.industry_code})"
                 if table.industry_in_ddl else "")
        sentences = [f"The {table.table_name} table holds {table.purpose}{where}."]
        targets = list(dict.fromkeys(c.references[0] for c in table.columns if c.references))
        if targets:
            sentences.append(f"It links to {_and(targets)} through foreign keys.")
        tracked = [label for label, present in (
            ("a status", any(c.name == "status" or c.name.endswith("_status")
                             for c in table.columns)),
            ("monetary amounts", any(self._is_money(c) for c in table.columns)),
            ("measurements with their units", any(self._unit(c.name) and self._unit(c.name)[0]
                                                  not in _TIME_UNITS for c in table.columns)),
            ("timestamps", any(c.sql_type == "TIMESTAMP" for c in table.columns))) if present]
        if tracked:
            sentences.append(f"Each {table.entity} carries {_and(tracked)}.")
        return " ".join(sentences)

    def describe_column(self, column: Column, table: SynthTable) -> str:
        text = self._meaning(column, table)
        if column.nullable and not column.primary_key:
            text += " Optional."
        return text

    def _meaning(self, c: Column, table: SynthTable) -> str:
        entity, words = table.entity, humanise(c.name)
        keys = [k.name for k in table.columns if k.primary_key]
        if c.primary_key and len(keys) == 1:
            return f"Primary key: unique identifier of the {entity}."
        key_part = f"Part of the primary key ({', '.join(keys)}). " if c.primary_key else ""
        if c.references:
            ref_table, ref_column = c.references
            return (f"{key_part}Foreign key to {ref_table}.{ref_column}: the "
                    f"{humanise(c.name.removesuffix('_id'))} of this {entity}.")
        if c.comment:
            return f"{key_part}{_cap(c.comment.rstrip('.'))}."
        if c.allowed_values:
            return f"{key_part}{_cap(words)} of the {entity}; one of {_either(c.allowed_values)}."
        return key_part + self._by_name(c, table, entity, words)

    def _by_name(self, c: Column, table: SynthTable, entity: str, words: str) -> str:
        if c.name in _GLOSSARY:
            return _GLOSSARY[c.name].format(entity=entity)
        if c.sql_type == "BOOLEAN":
            if c.name.startswith(("is_", "has_")):
                verb, what = c.name.split("_", 1)
                return f"True when the {entity} {verb} {humanise(what)}."
            return f"Flag: {words} (true or false)."
        if unit := self._unit(c.name):
            suffix, label = unit
            return f"{_cap(humanise(c.name[:-len(suffix)]))}, in {label}."
        if self._is_money(c):
            currency = (", in the currency given by currency_code"
                        if "currency_code" in table.column_names else "")
            return (f"{_cap(words)}: a monetary value with {_decimal_scale(c.sql_type)} "
                    f"decimal places{currency}.")
        if c.sql_type == "TIMESTAMP":
            if c.name.endswith("_at"):
                event = humanise(c.name[:-3])
                return (f"When the {entity} was {event} (date and time)."
                        if event.split()[-1].endswith("ed") else f"Date and time of {event}.")
            return f"{_cap(words)}, as a date and time."
        if c.sql_type == "DATE":
            if c.name.endswith("_on"):
                return f"Date the {entity} was {humanise(c.name[:-3])}."
            return f"{_cap(self._of(words, entity))}, as a calendar date."
        if c.name == "status" or c.name.endswith("_status"):
            return f"Current status code of the {entity}."
        if c.name.endswith("_id"):
            return f"Identifier of the {humanise(c.name[:-3])} (no foreign key is declared)."
        if c.name.endswith("_postal_code"):
            return f"{_cap(words)} of the {entity}."
        if c.name.endswith("_code"):
            return f"Code of the {humanise(c.name[:-5])} for the {entity}."
        if c.name.endswith("_name"):
            return f"Name of the {humanise(c.name[:-5])}."
        if c.name.endswith("_number"):
            return (f"{_cap(words)}: the reference people use for the {entity}."
                    if words.split()[0] in entity else f"{_cap(words)} of the {entity}.")
        if c.name.startswith(("quantity", "qty")) or c.name.endswith(("_count", "_point")):
            return f"{_cap(words)} for the {entity}, as a quantity."
        return f"{_cap(words)} of the {entity}."

    @staticmethod
    def _of(words: str, entity: str) -> str:
        """Say "hire date of the employee", but not "invoice date of the invoice"."""
        return words if entity.split()[-1] in words.split() else f"{words} of the {entity}"

    @staticmethod
    def _unit(name: str) -> tuple[str, str] | None:
        return next(((s, label) for s, label in _UNITS.items() if name.endswith(s)), None)

    @staticmethod
    def _is_money(c: Column) -> bool:
        return (_decimal_scale(c.sql_type) is not None
                and bool(_MONEY_WORDS & set(c.name.split("_"))))


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


class LLMTeacher:
    """Documentation from an LLM (``generate(prompts, params) -> list[str]``, infra/llm.py's
    contract). Its reply is parsed leniently; a missing description or column comment is
    filled in by the rule teacher and counted, so every example stays complete."""

    name = "llm"

    def __init__(self, llm: Any, params: Any = None, batch_size: int = 16,
                 fallback: RuleTeacher | None = None) -> None:
        self.llm = llm
        self.params = params  # None: greedy GenerationParams, built on first use
        self.batch_size = batch_size  # prompts per generate() call
        self.fallback = fallback or RuleTeacher()
        self.fallback_columns = 0  # totals over every document() call
        self.fallback_descriptions = 0

    def prompt(self, table: SynthTable) -> str:
        names = ", ".join(table.column_names)
        return (f"{tabledoc_instruction(table.ddl)}\n\nReply in exactly this format and nothing "
                f"else:\nDescription: <one to three sentences>\n- <column name>: <comment>\n"
                f"with one line for each of these columns, in this order: {names}\n")

    def document(self, tables: Sequence[SynthTable]) -> list[TableDoc]:
        docs: list[TableDoc] = []
        for start in range(0, len(tables), self.batch_size):
            batch = tables[start:start + self.batch_size]
            replies = self.llm.generate([self.prompt(t) for t in batch], self._params())
            if len(replies) != len(batch):
                raise RuntimeError(f"teacher LLM returned {len(replies)} replies for "
                                   f"{len(batch)} prompts")
            docs += [self.from_reply(reply, table) for reply, table in zip(replies, batch)]
        return docs

    def from_reply(self, reply: str, table: SynthTable) -> TableDoc:
        description, found = parse_response(reply or "", table.column_names)
        found = {k: one_line(v) for k, v in found.items() if v.strip()}
        missing = [c for c in table.columns if c.name not in found]
        for column in missing:
            found[column.name] = self.fallback.describe_column(column, table)
        no_description = not description
        if no_description:
            description = self.fallback.describe_table(table)
        self.fallback_columns += len(missing)
        self.fallback_descriptions += no_description
        return TableDoc(description, {n: found[n] for n in table.column_names},
                        fallback_columns=len(missing), fallback_description=no_description)

    def _params(self) -> Any:
        if self.params is None:
            from infra.llm import GenerationParams  # lazy: infra.llm pulls in model clients

            self.params = GenerationParams(max_new_tokens=512, temperature=0.0)
        return self.params


# ---------------------------------------------------------------------------------------------
# Train/test split by family
# ---------------------------------------------------------------------------------------------


def split_by_family(tables: Sequence[SynthTable], test_fraction: float,
                    seed: int = 0) -> tuple[list[SynthTable], list[SynthTable]]:
    """(train, test): whole families go to test, in a seeded hash order, until test holds
    about ``test_fraction`` of the tables. Independent of the tables' order."""
    sizes = Counter(t.family for t in tables)
    order = sorted(sizes, key=lambda f: hashlib.sha256(f"{seed}:{f}".encode()).hexdigest())
    target = test_fraction * len(tables)
    test_families: set[str] = set()
    held = 0
    for family in order[:-1] if len(order) > 1 else []:  # train always keeps a family
        if held >= target:
            break
        test_families.add(family)
        held += sizes[family]
    train = [t for t in tables if t.family not in test_families]
    test = [t for t in tables if t.family in test_families]
    return train, test


# ---------------------------------------------------------------------------------------------
# The Delta table and the step that writes it
# ---------------------------------------------------------------------------------------------

SYNTH_TABLEDOC = TableSpec(
    layer="silver", name="tabledoc_examples",
    schema=("example_id STRING, family STRING, industry_code STRING, industry_title STRING, "
            "sector STRING, archetype STRING, table_name STRING, ddl STRING, "
            "instruction STRING, response STRING, text STRING, split STRING, teacher STRING, "
            "n_columns INT, columns_documented INT, format_ok BOOLEAN, fallback_columns INT"),
    key=("example_id",),
    # Lean on purpose (each expectation is a Spark pass): format_ok already implies a
    # description and a non-empty comment for every column, in table order.
    expectations=(
        expect("column_values_to_not_be_null", column="text"),
        expect("column_value_lengths_to_be_between", column="instruction", min_value=1),
        expect("column_value_lengths_to_be_between", column="response", min_value=1),
        expect("column_values_to_be_in_set", column="split", value_set=["train", "test"]),
        expect("column_values_to_be_in_set", column="format_ok", value_set=[True]),
        expect("column_pair_values_to_be_equal", column_A="columns_documented",
               column_B="n_columns"),
    ),
    # a rule teacher never fails; an LLM teacher's gaps are filled by it, so failures are rare
    max_quarantine_fraction=0.05,
    description="Fine-tuning examples: CREATE TABLE -> description + column comments (Alpaca).",
)


class SynthConfig(BaseModel):
    n_examples: int = Field(3600, gt=0, description="tables to generate; the seed used ~3,600")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0,
                                 description="share of tables held out, as whole families")
    seed: int = 0  # same seed -> byte-identical examples; also orders the family split
    # "rule" (deterministic, offline) or an OpenAI-compatible endpoint as infra.llm.load_llm
    # takes it: "http://host:8000/v1#model-name" or {"base_url": …, "model": …, "mode": …}
    teacher: str | dict = "rule"

    @field_validator("teacher")
    @classmethod
    def _known_teacher(cls, value: str | dict) -> str | dict:
        if isinstance(value, dict) and not (value.get("base_url") and value.get("model")):
            raise ValueError("an endpoint teacher needs 'base_url' and 'model'")
        if isinstance(value, str) and value != "rule" and not (
                value.startswith(("http://", "https://")) and "#" in value):
            raise ValueError(f"teacher {value!r}: expected 'rule' or an endpoint "
                             f"'http(s)://host/v1#model-name'")
        return value


def teacher_from_config(spec: str | dict) -> Teacher:
    if spec == "rule":
        return RuleTeacher()
    from infra.llm import load_llm  # lazy: only endpoint teachers need the LLM clients

    return LLMTeacher(load_llm(spec))


def build_examples(tables: Sequence[SynthTable], docs: Sequence[TableDoc],
                   test_families: set[str], teacher: str, seed: int) -> list[dict]:
    """One row of SYNTH_TABLEDOC per table; each row re-checks its own response."""
    rows = []
    for table, doc in zip(tables, docs, strict=True):
        instruction, response = tabledoc_instruction(table.ddl), doc.response(table)
        names = table.column_names
        rows.append({
            "example_id": f"tabledoc-{seed}-{table.index:06d}", "family": table.family,
            "industry_code": table.industry_code, "industry_title": table.industry_title,
            "sector": table.sector, "archetype": table.archetype,
            "table_name": table.table_name, "ddl": table.ddl, "instruction": instruction,
            "response": response, "text": format_example(instruction, response),
            "split": "test" if table.family in test_families else "train", "teacher": teacher,
            "n_columns": len(names),
            "columns_documented": round(column_coverage(response, names) * len(names)),
            "format_ok": format_valid(response, names),
            "fallback_columns": doc.fallback_columns,
        })
    return rows


def example_stats(rows: Sequence[dict]) -> dict:
    by_split = Counter(r["split"] for r in rows)
    families = {s: len({r["family"] for r in rows if r["split"] == s}) for s in by_split}
    return {"rows": dict(by_split), "families": families,
            "archetypes": len({r["archetype"] for r in rows}),
            "industries": len({r["industry_code"] for r in rows}),
            "fallback_columns": sum(r["fallback_columns"] for r in rows)}


def tabledoc_rows(config: SynthConfig, teacher: Teacher | None = None) -> list[dict]:
    """Generate, document and split the examples in memory: the rows of SYNTH_TABLEDOC."""
    tables = generate_tables(config.n_examples, config.seed)
    teacher = teacher or teacher_from_config(config.teacher)
    docs = teacher.document(tables)
    _, test = split_by_family(tables, config.test_fraction, config.seed)
    return build_examples(tables, docs, {t.family for t in test}, teacher.name, config.seed)


def training_pair(instruction: str, response: str) -> tuple[str, str]:
    """(prompt, target): the Alpaca text cut after the response marker; the target ends
    with the end marker, so a model learns to stop."""
    prompt = prompt_of(instruction)
    return prompt, format_example(instruction, response)[len(prompt):]


def write_tabledoc_examples(spark, config: SynthConfig, txn_id: str, root: Path | None = None,
                            *, teacher: Teacher | None = None) -> dict:
    """Step: generate, document, split and write silver/tabledoc_examples; returns its manifest.

    ``teacher`` overrides ``config.teacher`` (tests and callers that already hold an LLM)."""
    from infra.lake import write_table

    rows = tabledoc_rows(config, teacher)
    columns = [f.split()[0] for f in SYNTH_TABLEDOC.schema.split(", ")]
    df = spark.createDataFrame([tuple(r[c] for c in columns) for r in rows],
                               SYNTH_TABLEDOC.schema)
    manifest = write_table(spark, SYNTH_TABLEDOC, df, txn_id=txn_id, mode="overwrite",
                           root=root)
    manifest["stats"] = example_stats(rows)
    return manifest


# ---------------------------------------------------------------------------------------------
# Any instruction data set, in the same template
# ---------------------------------------------------------------------------------------------


class InstructionDatasetError(ValueError):
    """A row of an instruction data set is unusable; the message names the file and row."""


class _BadRow(ValueError):
    pass


def load_instruction_dataset(path: str | Path, instruction_field: str = "instruction",
                             response_field: str = "response", input_field: str | None = None,
                             *, on_error: str = "raise", split: str | None = None,
                             stats: dict | None = None) -> list[dict]:
    """[{instruction, response, text}] from a .jsonl file, a .parquet file or a directory
    written by ``datasets``' save_to_disk (``split`` picks from a DatasetDict; default train).

    A non-empty ``input_field`` value is appended to the instruction under "Input:" (the
    Dolly variant of the template). Bad rows raise InstructionDatasetError naming the file and
    row (jsonl: line); with ``on_error="skip"`` they are skipped, counted in ``stats``."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no instruction data set at {path}")
    fields = [f for f in (instruction_field, response_field, input_field) if f]
    examples, errors, seen = [], [], 0
    for where, row in _rows(path, fields, split):
        seen += 1
        try:
            examples.append(_example(row, instruction_field, response_field, input_field))
        except _BadRow as err:
            message = f"{path}: {where}: {err}"
            if on_error == "raise":
                raise InstructionDatasetError(message) from None
            errors.append(message)
    if stats is not None:
        stats.update(rows=seen, loaded=len(examples), skipped=len(errors), errors=errors[:20])
    return examples


def _rows(path: Path, fields: list[str], split: str | None) -> Iterator[tuple[str, Any]]:
    if path.is_dir():
        yield from _dataset_rows(path, split)
    elif path.suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif path.suffix == ".parquet":
        yield from _parquet_rows(path, fields)
    else:
        raise InstructionDatasetError(f"{path}: expected a .jsonl or .parquet file or a "
                                      f"datasets save_to_disk directory")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines carry no row
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as err:
                yield f"line {number}", _BadRow(f"not valid JSON ({err.msg})")


def _parquet_rows(path: Path, fields: list[str]) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    present = [f for f in fields if f in parquet.schema_arrow.names]  # missing -> row error
    number = 0
    for batch in parquet.iter_batches(columns=present, batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield f"row {number}", row


def _dataset_rows(path: Path, split: str | None) -> Iterator[tuple[str, Any]]:
    import datasets

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        name = split or "train"
        if name not in data:
            raise InstructionDatasetError(f"{path}: no split {name!r}; it has {sorted(data)}")
        data = data[name]
    for number, row in enumerate(data, start=1):
        yield f"row {number}", row


def _example(row: Any, instruction_field: str, response_field: str,
             input_field: str | None) -> dict:
    if isinstance(row, _BadRow):
        raise row
    if not isinstance(row, dict):
        raise _BadRow(f"expected an object with fields, got {type(row).__name__}")
    instruction = _text_field(row, instruction_field)
    response = _text_field(row, response_field)
    if input_field and (extra := row.get(input_field)) not in (None, ""):
        if not isinstance(extra, str):
            raise _BadRow(f"field {input_field!r} is {type(extra).__name__}, expected a string")
        if extra.strip():
            instruction = f"{instruction}\n\nInput:\n{extra.strip()}"
    return {"instruction": instruction, "response": response,
            "text": format_example(instruction, response)}


def _text_field(row: dict, name: str) -> str:
    if name not in row or row[name] is None:
        raise _BadRow(f"field {name!r} is missing (expected a non-empty string)")
    value = row[name]
    if not isinstance(value, str):
        raise _BadRow(f"field {name!r} is {type(value).__name__}, expected a non-empty string")
    if not value.strip():
        raise _BadRow(f"field {name!r} is empty (expected a non-empty string)")
    return value.strip()
