// CPU emulation of the small CUDA subset the modulated-conv kernels use, so the SAME modconv.cu / modconv_kernels.cuh
// compile with g++ and run under AddressSanitizer + UndefinedBehaviorSanitizer (tests/kernels/emu/emulate.py).
//
// Execution model: one launch runs its blocks one after another; the threads of a block are fibers (ucontext) on
// one OS thread, switched only at __syncthreads() and warp shuffles, so
//   * `__shared__` (defined as `static`) is one array per kernel instantiation, shared by the block's fibers;
//   * __syncthreads() waits until every live thread of the block reaches a barrier; threads that have returned
//     count as arrived (as on sm_70+); live threads waiting at *different* __syncthreads() call sites abort;
//   * __shfl_xor_sync(0xffffffff, ...) needs all 32 lanes of the warp alive and waits for all of them;
//   * dynamic shared memory is a fresh heap buffer of exactly the launch's byte count per block, filled with NaN
//     bytes (0xff) so a read before write shows as NaN, and ASan reports any access past it;
//   * a launch whose dynamic shared memory exceeds the function's limit fails like CUDA does: 48 KiB by default,
//     raised only by cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, n), which itself is
//     refused above the emulated device's opt-in maximum (kOptinSmemBytes); grid/block limits are checked too.
// Not emulated: static __shared__ is not poisoned between blocks (it keeps the previous block's values), no memory
// model/race detection, rsqrtf/fmaf are exact IEEE versions, the 48 KiB limit ignores the kernel's static smem
// (ptxas -v reports that in tests/kernels/test_build.py).
#pragma once

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <cmath>
#include <cstddef>
#include <map>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define CUDA_EMU_ASAN 1
#endif

#define CUDA_EMU 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

typedef struct CUstream_st* cudaStream_t;

enum cudaError_t {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDeviceFunction = 98,
};

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

inline const char* cudaGetErrorString(cudaError_t e) {
    switch (e) {
        case cudaSuccess: return "no error";
        case cudaErrorInvalidValue: return "invalid argument";
        case cudaErrorInvalidConfiguration: return "invalid configuration argument";
        default: return "unknown error";
    }
}

typedef _Float16 __half;
inline float __half2float(__half h) { return static_cast<float>(h); }
inline __half __float2half_rn(float f) { return static_cast<__half>(f); }  // IEEE round-to-nearest-even
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }

namespace cuda_emu {

constexpr size_t kDefaultSmemBytes = 48 * 1024;  // dynamic smem a launch may use without opting in
constexpr int kOptinSmemBytes = 99 * 1024;       // sharedMemPerBlockOptin of sm_86/sm_89 (the smallest >= sm_80)
constexpr size_t kStackBytes = 256 * 1024;       // per emulated thread (ASan frames are larger than native)

[[noreturn]] inline void die(const char* what) {
    fprintf(stderr, "cuda_emu: %s\n", what);
    abort();
}

enum State { kReady, kAtBarrier, kAtWarp, kDone };

struct Fiber {
    ucontext_t ctx;
    char* stack = nullptr;
    State state = kReady;
    const void* site = nullptr;  // return address of the __syncthreads() it waits at
    float shfl = 0.f;
    dim3 tid;
};

struct Block {
    ucontext_t sched;
    std::vector<Fiber> fibers;
    int current = -1;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
    const void* sched_stack = nullptr;
    size_t sched_stack_size = 0;
};

inline Block*& block() {
    static Block* b = nullptr;
    return b;
}

// The per-thread built-ins the kernel reads; set by the scheduler before it resumes a fiber.
inline dim3 g_threadIdx, g_blockIdx, g_blockDim, g_gridDim;
inline unsigned char* g_dyn_smem = nullptr;

inline std::map<const void*, int>& smem_limits() {
    static std::map<const void*, int> m;
    return m;
}

// Switch from the running fiber back to the scheduler (annotated for ASan's stack tracking).
inline void yield_to_scheduler(bool finished) {
    Block* b = block();
    Fiber& f = b->fibers[b->current];
#ifdef CUDA_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(finished ? nullptr : &fake, b->sched_stack, b->sched_stack_size);
#endif
    if (finished) {
        setcontext(&b->sched);
        die("setcontext returned");
    }
    swapcontext(&f.ctx, &b->sched);
#ifdef CUDA_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, &b->sched_stack, &b->sched_stack_size);
#endif
}

inline void fiber_main() {
    Block* b = block();
#ifdef CUDA_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &b->sched_stack, &b->sched_stack_size);
#endif
    b->body(b->body_arg);
    b->fibers[b->current].state = kDone;
    yield_to_scheduler(true);
}

inline void resume(Block* b, int i) {
    Fiber& f = b->fibers[i];
    b->current = i;
    g_threadIdx = f.tid;
#ifdef CUDA_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
    swapcontext(&b->sched, &f.ctx);
#ifdef CUDA_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

// Releases the barrier whose waiters are complete; false when nothing can move (deadlock).
inline bool release_waiters(Block* b) {
    const int n = static_cast<int>(b->fibers.size());
    bool moved = false;
    for (int w0 = 0; w0 < n; w0 += 32) {  // warp-level waits (shuffles)
        int waiting = 0, done = 0, lanes = (n - w0 < 32) ? n - w0 : 32;
        for (int l = 0; l < lanes; ++l) {
            waiting += b->fibers[w0 + l].state == kAtWarp;
            done += b->fibers[w0 + l].state == kDone;
        }
        if (waiting > 0 && (done > 0 || lanes < 32))
            die("__shfl_xor_sync with a full mask while lanes of the warp have exited or do not exist");
        if (waiting == lanes) {
            for (int l = 0; l < lanes; ++l) b->fibers[w0 + l].state = kReady;
            moved = true;
        }
    }
    if (moved) return true;
    const void* site = nullptr;
    int live = 0;
    for (Fiber& f : b->fibers) {
        if (f.state == kDone) continue;
        if (f.state != kAtBarrier) return false;
        if (live++ == 0) site = f.site;
        if (f.site != site) die("threads of one block wait at different __syncthreads() calls (undefined in CUDA)");
    }
    for (Fiber& f : b->fibers)
        if (f.state == kAtBarrier) f.state = kReady;
    return live > 0;
}

inline void run_block(Block* b) {
    for (Fiber& f : b->fibers) {
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kStackBytes;
        f.ctx.uc_link = nullptr;
        f.state = kReady;
        makecontext(&f.ctx, fiber_main, 0);
    }
    for (;;) {
        bool any_live = false;
        for (int i = 0; i < static_cast<int>(b->fibers.size()); ++i) {
            if (b->fibers[i].state == kReady) resume(b, i);
            any_live |= b->fibers[i].state != kDone;
        }
        bool all_done = true;
        for (Fiber& f : b->fibers) all_done &= f.state == kDone;
        if (all_done) return;
        if (!release_waiters(b)) die("deadlock: live threads wait at a barrier the others never reach");
        (void)any_live;
    }
}

inline int smem_limit(const void* fn) {
    auto it = smem_limits().find(fn);
    return it == smem_limits().end() ? static_cast<int>(kDefaultSmemBytes) : it->second;
}

inline void log_launch(const void* fn, dim3 g, dim3 bl, size_t smem) {
    if (getenv("CUDA_EMU_TRACE") == nullptr) return;
    Dl_info info{};
    const char* name = (dladdr(fn, &info) && info.dli_sname) ? info.dli_sname : "?";
    fprintf(stdout, "launch %s grid=%u,%u,%u block=%u,%u,%u smem=%zu\n", name, g.x, g.y, g.z, bl.x, bl.y, bl.z,
            smem);
}

template <typename F>
cudaError_t launch(const void* fn, dim3 grid, dim3 blk, size_t smem, F&& body) {
    const unsigned long long threads = (unsigned long long)blk.x * blk.y * blk.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0 || threads > 1024 || blk.z > 64 ||
        grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u)
        return cudaErrorInvalidConfiguration;
    if (smem > static_cast<size_t>(smem_limit(fn))) return cudaErrorInvalidValue;
    log_launch(fn, grid, blk, smem);
    Block b;
    b.fibers.resize(threads);
    for (size_t t = 0; t < threads; ++t) {
        void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) die("mmap of a fiber stack failed");
        b.fibers[t].stack = static_cast<char*>(p);
        b.fibers[t].tid = dim3(t % blk.x, (t / blk.x) % blk.y, t / (blk.x * blk.y));
    }
    using Body = std::remove_reference_t<F>;
    b.body = [](void* arg) { (*static_cast<Body*>(arg))(); };
    b.body_arg = &body;
    block() = &b;
    g_blockDim = blk;
    g_gridDim = grid;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                g_blockIdx = dim3(x, y, z);
                g_dyn_smem = smem ? static_cast<unsigned char*>(malloc(smem)) : nullptr;
                if (smem) memset(g_dyn_smem, 0xff, smem);
                run_block(&b);
                free(g_dyn_smem);
                g_dyn_smem = nullptr;
            }
    block() = nullptr;
    for (Fiber& f : b.fibers) munmap(f.stack, kStackBytes);
    return cudaSuccess;
}

inline void syncthreads(const void* site) {
    Block* b = block();
    Fiber& f = b->fibers[b->current];
    f.state = kAtBarrier;
    f.site = site;
    yield_to_scheduler(false);
}

inline void warp_wait() {
    Block* b = block();
    b->fibers[b->current].state = kAtWarp;
    yield_to_scheduler(false);
}

inline float shfl_xor(unsigned mask, float v, int lane_mask) {
    if (mask != 0xffffffffu) die("__shfl_xor_sync: only the full mask is emulated");
    Block* b = block();
    const int me = b->current, lane = me & 31;
    if (lane_mask < 0 || lane_mask > 31) die("__shfl_xor_sync: laneMask outside [0, 31]");
    b->fibers[me].shfl = v;
    warp_wait();
    const float r = b->fibers[(me & ~31) | (lane ^ lane_mask)].shfl;
    warp_wait();  // nobody overwrites its slot before every lane has read
    return r;
}

template <typename T>
T* dynamic_smem() {
    if (g_dyn_smem == nullptr) die("dynamic shared memory used by a launch that requested 0 bytes");
    return reinterpret_cast<T*>(g_dyn_smem);
}

}  // namespace cuda_emu

#define threadIdx (cuda_emu::g_threadIdx)
#define blockIdx (cuda_emu::g_blockIdx)
#define blockDim (cuda_emu::g_blockDim)
#define gridDim (cuda_emu::g_gridDim)

__attribute__((noinline)) inline void __syncthreads() { cuda_emu::syncthreads(__builtin_return_address(0)); }
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) { return cuda_emu::shfl_xor(mask, v, lane_mask); }

// The runtime API subset, with CUDA's signatures (templated overloads of cuda_runtime.h).
template <typename... P>
cudaError_t cudaLaunchKernel(void (*fn)(P...), dim3 grid, dim3 block, void** args, size_t smem = 0,
                             cudaStream_t stream = nullptr) {
    (void)stream;  // one in-order queue: launches run to completion in call order
    return cuda_emu::launch(reinterpret_cast<const void*>(fn), grid, block, smem, [&]() {
        size_t i = 0;
        auto arg = [&](auto* tag) -> decltype(auto) {
            using T = std::remove_pointer_t<decltype(tag)>;
            return *static_cast<T*>(args[i++]);
        };
        std::apply(fn, std::tuple<P...>{arg(static_cast<std::remove_cv_t<std::remove_reference_t<P>>*>(nullptr))...});
    });
}

template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*fn)(P...), cudaFuncAttribute attr, int value) {
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
    if (value < 0 || value > cuda_emu::kOptinSmemBytes) return cudaErrorInvalidValue;
    cuda_emu::smem_limits()[reinterpret_cast<const void*>(fn)] = value;
    return cudaSuccess;
}

inline cudaError_t cudaGetLastError() { return cudaSuccess; }  // launches report their errors directly
