"""Register a patient (登记新患者)."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from ..commands import Command, Decision, Fact, require_text_id
from ..errors import DomainError, Rejection
from ..identity import DOCUMENT_NAMES, DocumentType, validate_document
from ..state import DeskState, OpContext
from . import PatientAliasRow, PatientRow, patient_id_in_use
from .fields import (
    check_document,
    check_sex,
    clean_address,
    clean_name,
    clean_phone,
    parse_birth_date,
)


class RegisterPatient(Command):
    """Register a new patient. The id is made at the workstation (a ULID), so
    a patient registered offline is usable at once, provisionally. If a
    patient with the same document number already exists, the new id becomes
    an alias of that patient (``applied_modified``), never a second record."""

    kind: ClassVar[str] = "register_patient"
    roles: ClassVar[frozenset[str]] = frozenset({"cashier", "admission", "registrar", "supervisor"})
    names: ClassVar[tuple[str, str]] = ("登记新患者", "register patient")

    patient_id: str
    name: str
    sex: str
    birth_date: str
    doc_type: str
    doc_no: str
    phone: str
    address: str = ""

    def decide(self, state: DeskState, ctx: OpContext) -> Decision:
        today = date.fromisoformat(ctx.judging_day)
        name = clean_name(self.name)
        sex = check_sex(self.sex)
        # the document first: a mistyped ID number explains a missing birth date too
        validate_document(self.doc_type, self.doc_no, today)
        born = parse_birth_date(self.birth_date, today)
        doc_no = check_document(self.doc_type, self.doc_no, sex, born, today)
        phone = clean_phone(self.phone)
        address = clean_address(self.address)
        require_text_id(self.patient_id, "patient_id")
        if patient_id_in_use(state, self.patient_id):
            raise DomainError("patient_id_taken")
        existing = state.find(PatientRow, doc_no=doc_no, doc_type=self.doc_type)
        if existing is not None:
            alias = PatientAliasRow(
                alias_id=self.patient_id, patient_id=existing.patient_id, mapped_at=ctx.at
            )
            return Decision(
                rows=[alias],
                outcome="applied_modified",
                notice=Rejection(code="patient_mapped", params={"name": existing.name}),
                result={"patient_id": existing.patient_id, "mapped": True},
            )
        patient = PatientRow(
            patient_id=self.patient_id,
            name=name,
            sex=sex,
            birth_date=born.isoformat(),
            doc_type=self.doc_type,
            doc_no=doc_no,
            phone=phone,
            address=address,
            registered_at=ctx.at,
            registered_by=ctx.actor.clerk_id,
            registered_device=ctx.actor.device_id,
        )
        return Decision(rows=[patient], result={"patient_id": patient.patient_id, "mapped": False})

    def summary(self) -> list[Fact]:
        try:
            document = DOCUMENT_NAMES[DocumentType(self.doc_type)]
        except ValueError:
            document = (self.doc_type, self.doc_type)
        return [
            Fact(("患者", "patient"), self.name),
            Fact(document, self.doc_no),
        ]
