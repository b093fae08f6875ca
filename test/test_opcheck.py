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


def test_typed_wrappers_call_the_ops():
    """deepgemm_ops.<op> is a documented, typed wrapper of torch.ops.deepgemm.<op>, for every op in the table."""
    import inspect

    import deepgemm_ops
    from deepgemm_ops._ops import SCHEMAS

    for name in SCHEMAS:
        wrapper = getattr(deepgemm_ops, name)
        assert wrapper.__doc__ and wrapper.__module__ == "deepgemm_ops.ops", name
        assert all(p.annotation is not inspect.Parameter.empty for p in inspect.signature(wrapper).parameters.values())
    for name, args in op_samples():
        want, got = getattr(ops, name)(*args), getattr(deepgemm_ops, name)(*args)
        if name.endswith("_out"):
            continue  # writes its out argument; None either way
        for w, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            assert torch.equal(w.view(torch.uint8) if w.dtype == torch.float8_e4m3fn else w,
                               g.view(torch.uint8) if g.dtype == torch.float8_e4m3fn else g), name
