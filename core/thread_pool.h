// A fixed pool of worker threads and ParallelFor over an index range.
//
// One process-wide pool (size set once with SetNumThreads, default: hardware
// concurrency) serves every kernel, so nested libraries do not oversubscribe.
// ParallelFor blocks until every chunk has run; it is safe to call from one
// thread at a time per pool (kernels are called from the driver thread).
#ifndef RETORT_CORE_THREAD_POOL_H_
#define RETORT_CORE_THREAD_POOL_H_

#include <cstdint>
#include <functional>

namespace retort {

void SetNumThreads(int n);
int NumThreads();

// Calls fn(begin, end) on disjoint chunks covering [0, n), at least `grain`
// indices per chunk, spread over the pool (the calling thread takes part).
void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace retort

#endif  // RETORT_CORE_THREAD_POOL_H_
