"""torch.library.opcheck over every op's sample inputs (schema/fake/autograd registration consistency)."""

import pytest
import torch

from samples import op_samples, ops

# test_schema is left out: it compares outputs with allclose, which float8 tensors do not implement on the CPU.
UTILS = ("test_faketensor", "test_aot_dispatch_dynamic", "test_autograd_registration")


@pytest.mark.parametrize("name,args", op_samples(), ids=lambda v: v if isinstance(v, str) else "")
def test_opcheck(name, args):
    torch.library.opcheck(getattr(ops, name).default, args, test_utils=UTILS)


def test_schema_table_is_the_op_surface():
    from deepgemm_ops._ops import SCHEMAS

    assert sorted(SCHEMAS) == sorted({n for n, _ in op_samples()})
    for name, (schema, _) in SCHEMAS.items():
        assert str(getattr(ops, name).default._schema) == f"deepgemm::{name}{schema}"
    assert torch.Tag.needs_fixed_stride_order in ops.fp8_gemm_nt.default.tags
