"""The committed protobuf modules are exactly what scripts/gen_proto.sh produces."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys

from ..support import REPO


def test_generated_code_is_up_to_date(tmp_path):
    subprocess.run(["bash", str(REPO / "scripts" / "gen_proto.sh"), str(tmp_path)], check=True,
                   env=dict(os.environ, PYTHON=sys.executable))
    committed = REPO / "src" / "payments_svc" / "gen"
    generated = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert generated == sorted(p.name for p in committed.iterdir() if p.is_file() and p.suffix in (".py", ".pyi"))
    _, mismatch, errors = filecmp.cmpfiles(committed, tmp_path, generated, shallow=False)
    assert not mismatch and not errors, f"stale generated code, run `make proto`: {mismatch or errors}"


def test_service_keeps_its_full_name_and_reference_numbers():
    from payments_svc.gen import payments_pb2 as pb

    assert pb.DESCRIPTOR.services_by_name["PaymentsService"].full_name == "payments.PaymentsService"
    payment = pb.Payment.DESCRIPTOR.fields_by_name
    assert payment["id"].number == 1 and payment["refundable_cents"].number == 22 and payment["updated_at"].number == 25
    assert pb.PaymentStatus.Value("PAYMENT_STATUS_PAID") == 10 and pb.PaymentStatus.Value("PAYMENT_STATUS_EXPIRED") == 40
    assert pb.CreatePaymentRequest.DESCRIPTOR.fields_by_name["metadata"].number == 16
