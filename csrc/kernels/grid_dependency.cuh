// Programmatic dependent launch (PDL). With the host's launch attribute (deepgemm_ops.set_pdl, on by default) a kernel
// may start while the kernel before it in the stream is still finishing, so its launch latency and prologue hide
// under that kernel's tail. Every kernel here therefore calls enter_dependent_grid() after its prologue (which
// touches only shared memory and kernel parameters) and before its first global-memory read or write: the wait
// returns once the previous grid has completed and its writes are visible. Launched without the attribute, both
// instructions do nothing.
#pragma once

namespace deepgemm_ops::kernels {

__device__ __forceinline__ void enter_dependent_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Lets the next kernel launch once every CTA of this grid has started; it waits for this grid in turn.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace deepgemm_ops::kernels
