// Programmatic dependent launch (PDL). With the host's launch attribute (deepgemm_ops.set_pdl, on by default) a kernel
// may start while the kernel before it in the stream is still finishing, so its launch latency and prologue hide
// under that kernel's tail. Every kernel here therefore calls enter_dependent_grid() after its prologue (which
// touches only shared memory and kernel parameters) and before its first global-memory read or write: the wait
// returns once the previous grid has completed and its writes are visible. Launched without the attribute, the wait
// does nothing.
#pragma once

namespace deepgemm_ops::kernels {

// No explicit griddepcontrol.launch_dependents: the next kernel then launches as this grid's CTAs exit. Triggering at
// the start made the next kernels' CTAs wait on SMs early, which slowed CUDA-graph decode chains of small GEMMs by
// 2-4% (docs/PERF.md, session 10).
__device__ __forceinline__ void enter_dependent_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace deepgemm_ops::kernels
