// CUDA C++ on the CPU: the part of the language and of the device library that kernels/ uses, so
// that each kernel file compiles unchanged with the system's C++ compiler into a module of the
// emulated device. Every CUDA thread is a fiber whose stack region starts with its `emu::Thread`;
// the runtime (runtime.cpp) schedules a block's fibers on one OS thread and blocks over the cores.
//
// What maps to what:
// - `__shared__` variables are `static thread_local`: a block runs on one OS thread from start to
//   end, so each block sees its own copy; the runtime poisons them before every block.
// - `extern __shared__ T name[];` is rewritten by the loader into a macro for the block's dynamic
//   shared memory (`emu_dynamic_shared()`), also poisoned.
// - `threadIdx`, `blockIdx`, `blockDim`, `gridDim` read the running fiber's header, found by
//   masking the stack pointer (stack regions are aligned to their size).
// - Barriers and warp collectives call into the runtime, which switches fibers and checks their use.
#pragma once

#include <cfloat>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <math.h>
#include <type_traits>
#include <utility>
#ifndef EMU_RUNTIME
#include <dlfcn.h>
#include <link.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
// (no `__noinline__`: the C++ library's headers use that word inside their own attributes)
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local

struct uint3 {
    unsigned x, y, z;
};

struct alignas(16) float4 {
    float x, y, z, w;
};

inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

// Each fiber's stack region: this many bytes, aligned to this many, the header at its start.
constexpr uintptr_t kStackRegion = 128 * 1024;

// What a running fiber knows about itself; the first bytes of its stack region.
struct Thread {
    uint3 tid;
    uint3 bid;
    dim3 bdim;
    dim3 gdim;
};

// The running fiber: its stack lies inside its region, so masking any address on it finds the header.
__forceinline__ Thread* self() {
    char probe;
    uintptr_t at = reinterpret_cast<uintptr_t>(&probe);
    return reinterpret_cast<Thread*>(at & ~(kStackRegion - 1));
}

template <class T>
__forceinline__ uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a warp value fits 64 bits");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}

template <class T>
__forceinline__ T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

}  // namespace emu

// The runtime's entry points (runtime.cpp, loaded into the process before any kernel module).
enum EmuWarpOp { EMU_SHFL_IDX, EMU_SHFL_UP, EMU_SHFL_DOWN, EMU_SHFL_XOR, EMU_BALLOT, EMU_ANY, EMU_ALL, EMU_SYNCWARP };
extern "C" int emu_rt_syncthreads(int pred, int op, const char* file, int line);
extern "C" uint64_t emu_rt_warp(int op, unsigned mask, uint64_t value, int arg, int width,
                                const char* file, int line);
extern "C" unsigned emu_rt_activemask(void);
extern "C" void* emu_dynamic_shared(void);

#define threadIdx (::emu::self()->tid)
#define blockIdx (::emu::self()->bid)
#define blockDim (::emu::self()->bdim)
#define gridDim (::emu::self()->gdim)
#define warpSize 32

// Barriers: the op says what to reduce over the block (0 none, 1 count, 2 and, 3 or).
#define __syncthreads() ((void)emu_rt_syncthreads(0, 0, __FILE__, __LINE__))
#define __syncthreads_count(p) emu_rt_syncthreads((p) != 0, 1, __FILE__, __LINE__)
#define __syncthreads_and(p) emu_rt_syncthreads((p) != 0, 2, __FILE__, __LINE__)
#define __syncthreads_or(p) emu_rt_syncthreads((p) != 0, 3, __FILE__, __LINE__)

namespace emu {
template <class T>
__forceinline__ T shfl(int op, const char* file, int line, unsigned mask, T v, int arg, int width = 32) {
    return from_bits<T>(emu_rt_warp(op, mask, to_bits(v), arg, width, file, line));
}
}  // namespace emu

#define __shfl_sync(mask, v, lane, ...) ::emu::shfl(EMU_SHFL_IDX, __FILE__, __LINE__, mask, v, lane, ##__VA_ARGS__)
#define __shfl_up_sync(mask, v, d, ...) ::emu::shfl(EMU_SHFL_UP, __FILE__, __LINE__, mask, v, d, ##__VA_ARGS__)
#define __shfl_down_sync(mask, v, d, ...) ::emu::shfl(EMU_SHFL_DOWN, __FILE__, __LINE__, mask, v, d, ##__VA_ARGS__)
#define __shfl_xor_sync(mask, v, m, ...) ::emu::shfl(EMU_SHFL_XOR, __FILE__, __LINE__, mask, v, m, ##__VA_ARGS__)
#define __ballot_sync(mask, p) ((unsigned)emu_rt_warp(EMU_BALLOT, mask, (p) != 0, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, p) ((int)emu_rt_warp(EMU_ANY, mask, (p) != 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, p) ((int)emu_rt_warp(EMU_ALL, mask, (p) != 0, 0, 32, __FILE__, __LINE__))
#define __syncwarp(...) ((void)emu_rt_warp(EMU_SYNCWARP, (0xffffffffu, ##__VA_ARGS__), 0, 0, 32, __FILE__, __LINE__))
#define __activemask() emu_rt_activemask()

// Fences: blocks run on different OS threads, so global memory needs real ones.
#define __threadfence() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define __threadfence_block() __atomic_thread_fence(__ATOMIC_SEQ_CST)
// A load past a GPU's L1 cache, for what other blocks wrote during the launch: memory here is
// one, so a plain load after the fences above.
template <class T>
__forceinline__ T __ldcg(const T* p) {
    return *p;
}

// Atomics. A block's fibers never preempt each other, but blocks run in parallel on the cores, so
// every atomic is a real one.
template <class T>
__forceinline__ T atomicAdd(T* p, T v) {
    if constexpr (std::is_floating_point<T>::value) {
        using U = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;
        U* q = reinterpret_cast<U*>(p);
        U old = __atomic_load_n(q, __ATOMIC_RELAXED);
        for (;;) {
            T cur;
            std::memcpy(&cur, &old, sizeof(T));
            T next = cur + v;
            U nb;
            std::memcpy(&nb, &next, sizeof(T));
            if (__atomic_compare_exchange_n(q, &old, nb, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) return cur;
        }
    } else {
        return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
    }
}
template <class T>
__forceinline__ T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
template <class T>
__forceinline__ T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
template <class T>
__forceinline__ T atomicCAS(T* p, T expected, T desired) {
    __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
template <class T>
__forceinline__ T atomicMin(T* p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <class T>
__forceinline__ T atomicMax(T* p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_RELAXED);
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
    return old;
}
template <class T>
__forceinline__ T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
template <class T>
__forceinline__ T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
template <class T>
__forceinline__ T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }

// The device math library beyond <math.h>.
__forceinline__ float rsqrtf(float x) { return 1.0f / sqrtf(x); }
__forceinline__ double rsqrt(double x) { return 1.0 / sqrt(x); }
__forceinline__ float __expf(float x) { return expf(x); }
__forceinline__ float __logf(float x) { return logf(x); }
__forceinline__ float __sinf(float x) { return sinf(x); }
__forceinline__ float __cosf(float x) { return cosf(x); }
__forceinline__ float __powf(float x, float y) { return powf(x, y); }
__forceinline__ float __fdividef(float x, float y) { return x / y; }
__forceinline__ float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
__forceinline__ float __int_as_float(int x) { return emu::from_bits<float>(static_cast<uint32_t>(x)); }
__forceinline__ float __uint_as_float(unsigned x) { return emu::from_bits<float>(x); }
__forceinline__ int __float_as_int(float x) { return static_cast<int>(static_cast<uint32_t>(emu::to_bits(x))); }
__forceinline__ unsigned __float_as_uint(float x) { return static_cast<uint32_t>(emu::to_bits(x)); }
__forceinline__ double __longlong_as_double(long long x) { return emu::from_bits<double>(static_cast<uint64_t>(x)); }
__forceinline__ long long __double_as_longlong(double x) { return static_cast<long long>(emu::to_bits(x)); }
__forceinline__ int __popc(unsigned x) { return __builtin_popcount(x); }
__forceinline__ int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
__forceinline__ int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
__forceinline__ int __ffs(int x) { return __builtin_ffs(x); }
__forceinline__ int __mul24(int a, int b) { return a * b; }
__forceinline__ unsigned __umul24(unsigned a, unsigned b) { return a * b; }
__forceinline__ int min(int a, int b) { return a < b ? a : b; }
__forceinline__ int max(int a, int b) { return a > b ? a : b; }
__forceinline__ unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
__forceinline__ unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
__forceinline__ long min(long a, long b) { return a < b ? a : b; }
__forceinline__ long max(long a, long b) { return a > b ? a : b; }
__forceinline__ long long min(long long a, long long b) { return a < b ? a : b; }
__forceinline__ long long max(long long a, long long b) { return a > b ? a : b; }
__forceinline__ unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
__forceinline__ unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
__forceinline__ float min(float a, float b) { return fminf(a, b); }
__forceinline__ float max(float a, float b) { return fmaxf(a, b); }
__forceinline__ double min(double a, double b) { return fmin(a, b); }
__forceinline__ double max(double a, double b) { return fmax(a, b); }

namespace emu {

// The kernel trampolines the loader appends to each module: call a kernel with its arguments
// given as an array of pointers to their values (a CUDA launch's parameter array), and tell
// the host the size of every parameter so it can check a launch before it runs.
template <class... A, size_t... I>
void invoke_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}

template <class... A>
void invoke(void (*f)(A...), void** args) {
    invoke_with(f, args, std::index_sequence_for<A...>{});
}

template <class... A>
const unsigned* signature(void (*)(A...), unsigned* count) {
    static const unsigned sizes[sizeof...(A) + 1] = {static_cast<unsigned>(sizeof(A))..., 0};
    *count = sizeof...(A);
    return sizes;
}

}  // namespace emu

#ifndef EMU_RUNTIME
// This module's thread-local block (its `__shared__` variables) on the calling OS thread, so
// the runtime can poison them before each block. Touching the anchor makes the C library
// allocate the block for this thread before it is looked up.
static thread_local char emu_tls_anchor;

struct EmuTlsQuery {
    uintptr_t base;
    void* data;
    size_t size;
};

static int emu_tls_visit(struct dl_phdr_info* info, size_t, void* arg) {
    EmuTlsQuery* q = static_cast<EmuTlsQuery*>(arg);
    if (info->dlpi_addr != q->base) return 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_TLS) {
            q->data = info->dlpi_tls_data;
            q->size = info->dlpi_phdr[i].p_memsz;
        }
    return 1;
}

extern "C" void emu_module_tls(void** data, size_t* size) {
    *reinterpret_cast<volatile char*>(&emu_tls_anchor) = 0;
    Dl_info self_info;
    EmuTlsQuery q = {0, nullptr, 0};
    if (dladdr(reinterpret_cast<void*>(&emu_module_tls), &self_info))
        q.base = reinterpret_cast<uintptr_t>(self_info.dli_fbase);
    dl_iterate_phdr(emu_tls_visit, &q);
    *data = q.data;
    *size = q.data ? q.size : 0;
}
#endif
