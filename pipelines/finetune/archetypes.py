"""Table archetypes (orders, claims, sensor_readings, …): what one row is, the table's
purpose, and the pool of columns a generated table draws from, each column written as a
compact spec string and parsed into a ColumnSpec.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from pipelines.finetune.industries import Industry

# One column per string: "name TYPE[|TYPE…] [flags] [#DDL comment]". Flags: pk (primary key),
# req (always present, NOT NULL), null (nullable), fk=<archetype>, in=a|b (allowed values,
# sometimes a CHECK), s=<sector or subsector>,… (only in those industries). {customer}, {site},
# {item} are the industry's words. Optional columns are drawn with tables.OPTIONAL_RATE.


@dataclass(frozen=True)
class Archetype:
    name: str
    table: str  # template of the table name
    entity: str  # what one row is
    purpose: str  # "one row per …", completes "The x table holds …"
    columns: tuple[str, ...]
    sectors: frozenset[str] | None = None  # sectors or subsectors it fits; None = all


def _archetype(name, table, entity, purpose, columns, sectors=None) -> Archetype:
    return Archetype(
        name,
        table,
        entity,
        purpose,
        tuple(columns),
        frozenset(sectors.split(",")) if sectors else None,
    )


ARCHETYPES: tuple[Archetype, ...] = (
    _archetype(
        "customers",
        "{customers}",
        "{customer}",
        "one row per {customer}, with contact details and status",
        [
            "{customer}_id BIGINT|INT pk",
            "external_ref VARCHAR(40) null #ID in the source system",
            "full_name VARCHAR(120)|VARCHAR(200) req",
            "email VARCHAR(254) null",
            "phone VARCHAR(32) null",
            "date_of_birth DATE null s=524,61,62,71",
            "preferred_{site}_id BIGINT null fk=sites",
            "billing_address VARCHAR(255) null",
            "postal_code VARCHAR(10) null",
            "country_code CHAR(2) #ISO 3166-1 alpha-2",
            "loyalty_tier VARCHAR(12) in=bronze|silver|gold s=44-45,71,72",
            "credit_limit DECIMAL(12,2)|DECIMAL(14,2) null s=23,31-33,42,522",
            "is_tax_exempt BOOLEAN s=23,31-33,42",
            "status VARCHAR(16) req in=active|inactive|suspended",
            "created_at TIMESTAMP req",
            "updated_at TIMESTAMP null",
        ],
    ),
    _archetype(
        "suppliers",
        "suppliers",
        "supplier",
        "one row per approved supplier",
        [
            "supplier_id BIGINT|INT pk",
            "supplier_name VARCHAR(160) req",
            "tax_number VARCHAR(20) null #tax registration number",
            "contact_email VARCHAR(254) null",
            "payment_terms_days INT #days allowed before payment is due",
            "currency_code CHAR(3)",
            "lead_time_days INT null",
            "rating DECIMAL(3,2) null #score from 0 to 5",
            "is_preferred BOOLEAN",
            "status VARCHAR(16) req in=approved|on_hold|blocked",
            "created_at TIMESTAMP req",
        ],
    ),
    _archetype(
        "employees",
        "employees",
        "employee",
        "one row per employee",
        [
            "employee_id BIGINT|INT pk",
            "first_name VARCHAR(60) req",
            "last_name VARCHAR(80) req",
            "email VARCHAR(254) null",
            "job_title VARCHAR(80)",
            "department_code VARCHAR(10) null",
            "{site}_id BIGINT null fk=sites",
            "manager_id BIGINT null #employee ID of the line manager",
            "hire_date DATE req",
            "termination_date DATE null",
            "hourly_rate DECIMAL(8,2) null s=11,23,44-45,56,72,81",
            "annual_salary DECIMAL(12,2) null",
            "license_number VARCHAR(30) null s=23,54,62",
            "cdl_class CHAR(1) null s=48-49 #commercial driver licence class",
            "is_active BOOLEAN req",
            "created_at TIMESTAMP",
        ],
    ),
    _archetype(
        "products",
        "{items}",
        "{item}",
        "one row per {item} on offer",
        [
            "{item}_id BIGINT|INT pk",
            "{item}_code VARCHAR(30)|VARCHAR(40) req",
            "{item}_name VARCHAR(160) req",
            "description VARCHAR(500)|TEXT null",
            "category VARCHAR(60) null",
            "unit_of_measure VARCHAR(10) #for example EA, KG, L",
            "unit_price DECIMAL(10,2)|DECIMAL(12,4)",
            "standard_cost DECIMAL(10,2) null",
            "currency_code CHAR(3)",
            "weight_kg DECIMAL(10,3) null s=11,21,31-33,42,44-45",
            "supplier_id BIGINT null fk=suppliers",
            "is_active BOOLEAN req",
            "created_at TIMESTAMP",
            "updated_at TIMESTAMP null",
        ],
    ),
    _archetype(
        "sites",
        "{sites}",
        "{site}",
        "one row per {site} the business operates",
        [
            "{site}_id BIGINT|INT pk",
            "{site}_name VARCHAR(120) req",
            "address_line VARCHAR(255)",
            "city VARCHAR(80)",
            "region_code VARCHAR(8) null",
            "country_code CHAR(2)",
            "latitude DECIMAL(9,6) null",
            "longitude DECIMAL(9,6) null",
            "floor_area_m2 DECIMAL(12,2) null",
            "manager_id BIGINT null fk=employees",
            "opened_on DATE null",
            "is_active BOOLEAN req",
        ],
    ),
    _archetype(
        "assets",
        "assets",
        "asset",
        "one row per piece of equipment at a {site}",
        [
            "asset_id BIGINT|INT pk",
            "asset_tag VARCHAR(30) req #tag printed on the equipment",
            "asset_type VARCHAR(40) req",
            "manufacturer VARCHAR(80) null",
            "model VARCHAR(80) null",
            "serial_number VARCHAR(60) null",
            "{site}_id BIGINT req fk=sites",
            "purchase_date DATE null",
            "purchase_cost DECIMAL(14,2) null",
            "warranty_end_date DATE null",
            "rated_power_kw DECIMAL(10,2) null s=21,22,31-33",
            "status VARCHAR(16) req in=in_service|under_repair|retired",
            "created_at TIMESTAMP",
        ],
        "11,21,22,23,31-33,42,48-49,51,53,56,62,71,72",
    ),
    _archetype(
        "orders",
        "orders",
        "order",
        "one row per order placed by a {customer}",
        [
            "order_id BIGINT pk",
            "order_number VARCHAR(20) req",
            "{customer}_id BIGINT req fk=customers",
            "{site}_id BIGINT null fk=sites",
            "order_date DATE req",
            "requested_delivery_date DATE null",
            "status VARCHAR(20) req in=pending|confirmed|shipped|delivered|cancelled",
            "currency_code CHAR(3)",
            "subtotal_amount DECIMAL(12,2) req",
            "tax_amount DECIMAL(12,2)",
            "shipping_amount DECIMAL(10,2) null s=31-33,42,44-45,48-49",
            "total_amount DECIMAL(12,2) req",
            "sales_rep_id BIGINT null fk=employees",
            "channel VARCHAR(12) null in=web|phone|store|edi",
            "created_at TIMESTAMP req",
            "updated_at TIMESTAMP null",
        ],
        "11,21,22,23,31-33,42,44-45,48-49,51,54,56,72,81",
    ),
    _archetype(
        "order_lines",
        "order_lines",
        "order line",
        "one row per line of an order",
        [
            "order_id BIGINT pk fk=orders",
            "line_number INT pk",
            "{item}_id BIGINT req fk=products",
            "quantity DECIMAL(12,3)|INT req #quantity ordered",
            "unit_price DECIMAL(12,4) req",
            "discount_pct DECIMAL(5,2) null",
            "line_amount DECIMAL(14,2) req",
            "tax_code VARCHAR(10) null",
            "promised_date DATE null",
            "status VARCHAR(12) in=open|allocated|shipped|cancelled",
            "weight_kg DECIMAL(10,3) null s=31-33,42,48-49",
        ],
        "11,21,22,23,31-33,42,44-45,48-49,51,54,56,72,81",
    ),
    _archetype(
        "inventory",
        "inventory",
        "stock record",
        "the stock on hand of each {item} at each {site}",
        [
            "inventory_id BIGINT pk",
            "{item}_id BIGINT req fk=products",
            "{site}_id BIGINT req fk=sites",
            "bin_location VARCHAR(20) null",
            "lot_number VARCHAR(30) null s=11,31-33,42,62",
            "quantity_on_hand DECIMAL(14,3)|INT req",
            "quantity_reserved DECIMAL(14,3)|INT",
            "reorder_point INT null #level that triggers replenishment",
            "unit_cost DECIMAL(12,4) null",
            "expiry_date DATE null s=11,31-33,42,44-45,62,72",
            "last_counted_at TIMESTAMP null",
            "updated_at TIMESTAMP req",
        ],
        "11,21,23,31-33,42,44-45,48-49,62,72",
    ),
    _archetype(
        "invoices",
        "invoices",
        "invoice",
        "one row per invoice sent to a {customer}",
        [
            "invoice_id BIGINT pk",
            "invoice_number VARCHAR(24) req",
            "{customer}_id BIGINT req fk=customers",
            "order_id BIGINT null fk=orders",
            "invoice_date DATE req",
            "due_date DATE req",
            "currency_code CHAR(3) req",
            "net_amount DECIMAL(14,2) req",
            "tax_amount DECIMAL(14,2) req",
            "total_amount DECIMAL(14,2) req",
            "amount_paid DECIMAL(14,2)",
            "status VARCHAR(16) req in=draft|issued|paid|overdue|void",
            "payment_terms_days INT null",
            "created_at TIMESTAMP",
        ],
    ),
    _archetype(
        "payments",
        "payments",
        "payment",
        "one row per payment received",
        [
            "payment_id BIGINT pk",
            "invoice_id BIGINT null fk=invoices",
            "{customer}_id BIGINT req fk=customers",
            "payment_date DATE req",
            "amount DECIMAL(14,2) req",
            "currency_code CHAR(3) req",
            "method VARCHAR(16) req in=card|bank_transfer|cash|check|direct_debit",
            "reference VARCHAR(64) null #bank or processor reference",
            "is_refund BOOLEAN",
            "status VARCHAR(12) in=pending|settled|failed|reversed",
            "received_at TIMESTAMP req",
        ],
    ),
    _archetype(
        "shipments",
        "shipments",
        "shipment",
        "one row per shipment of an order",
        [
            "shipment_id BIGINT pk",
            "order_id BIGINT req fk=orders",
            "carrier_code VARCHAR(12)",
            "tracking_number VARCHAR(40) null",
            "origin_{site}_id BIGINT null fk=sites",
            "destination_postal_code VARCHAR(10)",
            "ship_date DATE null",
            "expected_delivery_date DATE null",
            "delivered_at TIMESTAMP null",
            "package_count INT",
            "gross_weight_kg DECIMAL(10,3)",
            "freight_cost DECIMAL(10,2) null",
            "is_temperature_controlled BOOLEAN s=11,31-33,42,62,72",
            "status VARCHAR(16) req in=booked|in_transit|delivered|exception",
            "created_at TIMESTAMP req",
        ],
        "11,21,31-33,42,44-45,48-49,72",
    ),
    _archetype(
        "claims",
        "claims",
        "{claim}",
        "one row per {claim} filed by a {customer}",
        [
            "claim_id BIGINT pk",
            "claim_number VARCHAR(24) req",
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
            "shipment_id BIGINT null fk=shipments s=48-49",
            "program_code VARCHAR(10) s=92",
            "claimed_amount DECIMAL(14,2) req",
            "approved_amount DECIMAL(14,2) null",
            "reserve_amount DECIMAL(14,2) null s=524",
            "currency_code CHAR(3)",
            "filed_date DATE req",
            "status VARCHAR(16) req in=submitted|under_review|approved|denied|paid",
            "adjuster_id BIGINT null fk=employees",
            "closed_at TIMESTAMP null",
            "created_at TIMESTAMP req",
        ],
        "31-33,44-45,48-49,524,621,622,623,92",
    ),
    _archetype(
        "appointments",
        "appointments",
        "appointment",
        "one row per appointment a {customer} books",
        [
            "appointment_id BIGINT pk",
            "{customer}_id BIGINT req fk=customers",
            "employee_id BIGINT null fk=employees",
            "{site}_id BIGINT null fk=sites",
            "scheduled_start TIMESTAMP req",
            "scheduled_end TIMESTAMP req",
            "duration_minutes INT",
            "appointment_type VARCHAR(30)",
            "visit_reason VARCHAR(255) null s=62",
            "room_code VARCHAR(10) null s=61,62",
            "is_virtual BOOLEAN",
            "status VARCHAR(16) req in=booked|checked_in|completed|no_show|cancelled",
            "cancelled_at TIMESTAMP null",
            "notes TEXT null",
            "created_at TIMESTAMP req",
        ],
        "53,54,56,61,62,71,81,92",
    ),
    _archetype(
        "sensor_readings",
        "sensor_readings",
        "sensor reading",
        "one row per reading taken by a sensor on an asset",
        [
            "reading_id BIGINT pk",
            "asset_id BIGINT req fk=assets",
            "sensor_code VARCHAR(20) req",
            "recorded_at TIMESTAMP req",
            "temperature_c DECIMAL(5,2) null",
            "humidity_pct DECIMAL(5,2) null s=11,48-49,53,72",
            "soil_moisture_pct DECIMAL(5,2) null s=11",
            "vibration_mm_s DECIMAL(8,3) null s=21,22,31-33",
            "pressure_kpa DECIMAL(8,2) null s=21,22,31-33",
            "power_kw DECIMAL(10,3) null s=22,31-33,51",
            "energy_kwh DECIMAL(12,3) null s=22,53",
            "voltage_v DECIMAL(8,2) null s=22,51",
            "heart_rate_bpm INT null s=62",
            "spo2_pct DECIMAL(5,2) null s=62",
            "speed_km_h DECIMAL(6,2) null s=48-49",
            "fuel_level_pct DECIMAL(5,2) null s=48-49",
            "battery_pct DECIMAL(5,2) null",
            "quality_flag VARCHAR(8) null in=good|suspect|bad",
            "is_anomaly BOOLEAN",
            "ingested_at TIMESTAMP",
        ],
        "11,21,22,31-33,48-49,51,53,62,72",
    ),
    _archetype(
        "maintenance_events",
        "maintenance_events",
        "maintenance event",
        "one row per inspection or repair of an asset",
        [
            "event_id BIGINT pk",
            "asset_id BIGINT req fk=assets",
            "event_type VARCHAR(20) req in=inspection|preventive|corrective|calibration",
            "reported_at TIMESTAMP req",
            "started_at TIMESTAMP null",
            "completed_at TIMESTAMP null",
            "technician_id BIGINT null fk=employees",
            "downtime_minutes INT null",
            "labor_hours DECIMAL(6,2) null",
            "parts_cost DECIMAL(12,2) null",
            "failure_code VARCHAR(10) null",
            "engine_hours DECIMAL(10,1) null s=21,23,48-49",
            "work_order_number VARCHAR(20)",
            "notes TEXT null",
            "status VARCHAR(12) req in=open|in_progress|done",
        ],
        "11,21,22,23,31-33,48-49,51,53,56,71,72",
    ),
)
ARCHETYPE_BY_NAME = {a.name: a for a in ARCHETYPES}


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


@cache
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
    return (
        sectors is None
        or industry.sector in sectors
        or any(industry.code.startswith(s) for s in sectors)
    )
