"""Patients: the master record, the ids a workstation made offline that the
server mapped onto an existing record, and how rules look a patient up."""

from __future__ import annotations

from typing import ClassVar

from ..rows import IndexSpec, Row
from ..state import DeskState


class PatientRow(Row):
    table: ClassVar[str] = "patients"
    key: ClassVar[str] = "patient_id"
    indexes: ClassVar[tuple[IndexSpec, ...]] = (
        ("patients_document", ("doc_type", "doc_no"), True),
        ("patients_phone", ("phone",), False),
        ("patients_name", ("name",), False),
    )

    patient_id: str
    name: str
    sex: str
    birth_date: str
    doc_type: str
    doc_no: str
    phone: str
    address: str
    registered_at: str
    registered_by: str
    registered_device: str


class PatientAliasRow(Row):
    """A provisional patient id made offline that the server mapped to an existing patient."""

    table: ClassVar[str] = "patient_aliases"
    key: ClassVar[str] = "alias_id"
    indexes: ClassVar[tuple[IndexSpec, ...]] = (
        ("patient_aliases_patient", ("patient_id",), False),
    )

    alias_id: str
    patient_id: str
    mapped_at: str


def resolve_patient_id(state: DeskState, patient_id: str) -> str:
    """The id of the record a patient id stands for: the patient an alias was
    mapped to, else the id itself."""
    alias = state.get(PatientAliasRow, patient_id)
    return alias.patient_id if alias is not None else patient_id


def get_patient(state: DeskState, patient_id: str) -> PatientRow | None:
    """The patient, following an alias to the record it was mapped to."""
    return state.get(PatientRow, resolve_patient_id(state, patient_id))


def patient_id_in_use(state: DeskState, patient_id: str) -> bool:
    """True if the id is a patient or an alias."""
    return (
        state.get(PatientRow, patient_id) is not None
        or state.get(PatientAliasRow, patient_id) is not None
    )
