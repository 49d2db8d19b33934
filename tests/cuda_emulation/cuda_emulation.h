// cuda_emulation.h -- enough of CUDA C++ to run the project's kernels on the CPU, strictly.
//
// tests/cuda_emulation/__init__.py force-includes this header in front of the translation unit
// that backends/cupy_cuda.py::kernel_source() builds for NVRTC, appends one launcher per name
// expression and compiles the whole with g++ (UBSan in trap mode) into a shared library that
// it drives through ctypes. Nothing in the kernel sources changes for it: what only a device
// has (PTX) sits behind #ifdef __CUDA_ARCH__ there, which a host compiler leaves undefined.
//
// The model: blocks run one after another, in an order shuffled by the launch's seed (seed 0:
// in order). A block's threads are fibers on one OS thread that switch only at __syncthreads
// and at warp collectives, again in a seeded order, so a missing barrier shows as a result
// that depends on the seed. It is strict where GPUs are strict:
//   - a warp collective (__shfl_*_sync, __ballot_sync, __syncwarp) completes only when all 32
//     lanes of the warp wait at the same call (the same count of collectives so far, the same
//     function, primitive, mask and operand); a lane that exited or waits elsewhere is
//     divergence;
//   - __syncthreads completes only when every thread of the block waits at the same call (the
//     same count of barriers, the same function); a thread that exited while others wait is a
//     barrier error;
//   - __shared__ variables are poisoned (0xff bytes: NaN, -1, UINT_MAX) before every block;
//   - each pointer argument is a copy that ends at a guard page (and starts after one), with
//     const data read-only, so reading past an argument, or writing a const one, faults
//     (see guarded_copy for the one case where a few bytes lie between the end and the guard).
// Faults, UBSan traps (misaligned loads, local array overruns, overflow) and errors come back
// as a report whose code addresses Python turns into file:line with addr2line.
//
// It is sequentially consistent: a race that needs a missing atomic or fence to lose an
// update, or an FMA contraction, is invisible here (compute-sanitizer and a device see those).

#pragma once

#include <dlfcn.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

// -- the language ----------------------------------------------------------------------------

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// a function-local static is one object per kernel instance; blocks run one at a time, so it
// is the block's shared memory (registered and poisoned by the launcher: see emu_set_shared)
#define __shared__ static

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct alignas(8) uint2 {
    unsigned int x, y;
};
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
struct alignas(8) int2 {
    int x, y;
};
struct alignas(16) int4 {
    int x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) double2 {
    double x, y;
};

namespace emu {

constexpr int WARP = 32;
constexpr std::size_t STACK_BYTES = 256 * 1024;

enum class Wait : int { none, collective, barrier, exited };
enum class Op : int { shfl_xor, shfl_down, shfl_up, shfl_idx, ballot, syncwarp, any, all };
const char* const OP_NAMES[] = {"__shfl_xor_sync", "__shfl_down_sync", "__shfl_up_sync",
                                "__shfl_sync",     "__ballot_sync",    "__syncwarp",
                                "__any_sync",      "__all_sync"};

// report codes, as tests/cuda_emulation/__init__.py reads them
enum Code : int { ok = 0, divergence = 1, barrier_error = 2, fault = 3, trap = 4, usage = 5 };

struct Fiber {
    uint3 index;
    int linear;
    Wait wait;
    jmp_buf context;
    ucontext_t start;
    char* stack;
    // the call it waits at
    Op op;
    const void* site;
    unsigned int mask;
    int operand;
    int width;
    int bytes;
    unsigned long long count;  // collectives (or barriers) passed before this one
    unsigned long long collectives;
    unsigned long long barriers;
    std::uint64_t value;
    std::uint64_t result;
};

struct Region {  // one pointer argument's guarded copy
    char* mapping;
    std::size_t mapping_bytes;
    char* data;
    std::size_t bytes;
    bool writable;
};

struct Report {
    int code;
    int argument;  // the pointer argument a fault hit, or -1
    std::int64_t offset;  // where in (or past) that argument, in bytes
    std::uintptr_t address;
    unsigned int block[3];
    unsigned int thread[3];
    char text[1024];
};

inline Fiber* current = nullptr;
inline uint3 block_index;
inline dim3 block_dim;
inline dim3 grid_dim;
inline jmp_buf scheduler;
inline sigjmp_buf escape;
inline thread_local volatile sig_atomic_t in_launch = 0;  // this thread runs a launch
inline Report* report = nullptr;
inline std::vector<Region>* regions = nullptr;
inline std::vector<std::pair<void*, std::size_t>> shared_memory;
inline char* stacks = nullptr;
inline std::size_t stack_count = 0;
inline void (*entry_point)(void (*)(), void**) = nullptr;
inline void (*kernel_function)() = nullptr;
inline void** kernel_arguments = nullptr;

// Where the code that called the primitive is: an offset into this library, so that
// addr2line can name the source line (the return address, less one to stay in the call).
inline std::uintptr_t code_offset(const void* address) {
    Dl_info info;
    if (address == nullptr || dladdr(address, &info) == 0) return 0;
    return reinterpret_cast<std::uintptr_t>(address) -
           reinterpret_cast<std::uintptr_t>(info.dli_fbase) - 1;
}

template <typename... Args>
[[noreturn]] void fail(int code, const char* format, Args... args) {
    report->code = code;
    std::snprintf(report->text, sizeof(report->text), format, args...);
    in_launch = 0;
    siglongjmp(escape, 1);
}

inline void yield() {
    if (_setjmp(current->context) == 0) _longjmp(scheduler, 1);
}

inline void wait_collective(Op op, unsigned int mask, int operand, int width, int bytes,
                            std::uint64_t value, const void* site) {
    Fiber& self = *current;
    if (mask != 0xffffffffu) {
        fail(usage, "%s with mask 0x%08x at @%zx@: the emulation takes full-warp masks only",
             OP_NAMES[static_cast<int>(op)], mask, code_offset(site));
    }
    self.op = op;
    self.mask = mask;
    self.operand = operand;
    self.width = width;
    self.bytes = bytes;
    self.value = value;
    self.site = site;
    self.count = self.collectives++;
    self.wait = Wait::collective;
    yield();
}

template <typename T>
std::uint64_t bits_of(T value) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                  "warp shuffles move at most 8 bytes");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    return bits;
}

template <typename T>
T from_bits(std::uint64_t bits) {
    T value;
    std::memcpy(&value, &bits, sizeof(T));
    return value;
}

template <typename T>
T exchange(Op op, unsigned int mask, T value, int operand, int width, const void* site) {
    wait_collective(op, mask, operand, width, sizeof(T), bits_of(value), site);
    return from_bits<T>(current->result);
}

}  // namespace emu

#define threadIdx (::emu::current->index)
#define blockIdx (::emu::block_index)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
#define warpSize 32

// -- intrinsics --------------------------------------------------------------------------------

__attribute__((noinline)) inline void __syncthreads() {
    emu::Fiber& self = *emu::current;
    self.site = __builtin_return_address(0);
    self.count = self.barriers++;
    self.wait = emu::Wait::barrier;
    emu::yield();
}

template <typename T>
__attribute__((noinline)) T __shfl_xor_sync(unsigned int mask, T value, int lane_mask,
                                            int width = 32) {
    return emu::exchange(emu::Op::shfl_xor, mask, value, lane_mask, width,
                        __builtin_return_address(0));
}
template <typename T>
__attribute__((noinline)) T __shfl_down_sync(unsigned int mask, T value, unsigned int delta,
                                             int width = 32) {
    return emu::exchange(emu::Op::shfl_down, mask, value, static_cast<int>(delta), width,
                        __builtin_return_address(0));
}
template <typename T>
__attribute__((noinline)) T __shfl_up_sync(unsigned int mask, T value, unsigned int delta,
                                           int width = 32) {
    return emu::exchange(emu::Op::shfl_up, mask, value, static_cast<int>(delta), width,
                        __builtin_return_address(0));
}
template <typename T>
__attribute__((noinline)) T __shfl_sync(unsigned int mask, T value, int source, int width = 32) {
    return emu::exchange(emu::Op::shfl_idx, mask, value, source, width,
                        __builtin_return_address(0));
}
__attribute__((noinline)) inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
    emu::wait_collective(emu::Op::ballot, mask, 0, 32, 4, predicate != 0,
                         __builtin_return_address(0));
    return static_cast<unsigned int>(emu::current->result);
}
__attribute__((noinline)) inline int __any_sync(unsigned int mask, int predicate) {
    emu::wait_collective(emu::Op::any, mask, 0, 32, 4, predicate != 0,
                         __builtin_return_address(0));
    return static_cast<int>(emu::current->result);
}
__attribute__((noinline)) inline int __all_sync(unsigned int mask, int predicate) {
    emu::wait_collective(emu::Op::all, mask, 0, 32, 4, predicate != 0,
                         __builtin_return_address(0));
    return static_cast<int>(emu::current->result);
}
__attribute__((noinline)) inline void __syncwarp(unsigned int mask = 0xffffffffu) {
    emu::wait_collective(emu::Op::syncwarp, mask, 0, 32, 0, 0, __builtin_return_address(0));
}

// one OS thread runs every fiber, and fibers switch only at barriers: atomics are plain
template <typename T>
inline T emu_atomic_add(T* address, T value) {
    const T old = *address;
    *address = old + value;
    return old;
}
inline float atomicAdd(float* address, float value) { return emu_atomic_add(address, value); }
inline double atomicAdd(double* address, double value) { return emu_atomic_add(address, value); }
inline int atomicAdd(int* address, int value) {
    return static_cast<int>(emu_atomic_add(reinterpret_cast<unsigned int*>(address),
                                           static_cast<unsigned int>(value)));
}
inline unsigned int atomicAdd(unsigned int* address, unsigned int value) {
    return emu_atomic_add(address, value);
}
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
    return emu_atomic_add(address, value);
}

inline int __popc(unsigned int value) { return __builtin_popcount(value); }
inline int __popcll(unsigned long long value) { return __builtin_popcountll(value); }
inline float __int_as_float(int value) { return emu::from_bits<float>(emu::bits_of(value)); }
inline int __float_as_int(float value) { return emu::from_bits<int>(emu::bits_of(value)); }
inline double __longlong_as_double(long long value) {
    return emu::from_bits<double>(emu::bits_of(value));
}
inline long long __double_as_longlong(double value) {
    return emu::from_bits<long long>(emu::bits_of(value));
}

// -- the scheduler -----------------------------------------------------------------------------

namespace emu {

inline const char* wait_name(const Fiber& fiber) {
    switch (fiber.wait) {
        case Wait::collective:
            return OP_NAMES[static_cast<int>(fiber.op)];
        case Wait::barrier:
            return "__syncthreads";
        case Wait::exited:
            return "exit";
        default:
            return "running";
    }
}

// The function a call site is in. The compiler may duplicate a call (a peeled loop, a
// threaded jump), so two addresses of one call differ: they must lie in one function.
inline const void* site_function(const void* site) {
    Dl_info info;
    return dladdr(site, &info) != 0 ? info.dli_saddr : site;
}

inline bool same_call(const Fiber& a, const Fiber& b) {
    if (a.wait != b.wait || a.count != b.count) return false;
    if (a.site != b.site && site_function(a.site) != site_function(b.site)) return false;
    return a.wait != Wait::collective || (a.op == b.op && a.mask == b.mask &&
                                          a.operand == b.operand && a.width == b.width &&
                                          a.bytes == b.bytes);
}

// "thread 5 (warp 0, lane 5) waits at __shfl_xor_sync (call 3) at @offset@"
inline void describe(const Fiber& fiber, char* out, std::size_t size) {
    if (fiber.wait == Wait::exited) {
        std::snprintf(out, size, "thread %d (warp %d, lane %d) has exited", fiber.linear,
                      fiber.linear / WARP, fiber.linear % WARP);
        return;
    }
    std::snprintf(out, size, "thread %d (warp %d, lane %d) waits at %s (call %llu of its kind) at @%zx@",
                  fiber.linear, fiber.linear / WARP, fiber.linear % WARP, wait_name(fiber),
                  fiber.count + 1, code_offset(fiber.site));
}

[[noreturn]] inline void mismatch(int code, const Fiber& a, const Fiber& b, const char* what) {
    char first[256];
    char second[256];
    describe(a, first, sizeof(first));
    describe(b, second, sizeof(second));
    fail(code, "%s in block (%u, %u, %u): %s, but %s", what, block_index.x, block_index.y,
         block_index.z, first, second);
}

inline void complete_warp(std::vector<Fiber>& fibers, int first) {
    Fiber* lanes = &fibers[first];
    const Op op = lanes[0].op;
    std::uint64_t ballot = 0;
    for (int lane = 0; lane < WARP; ++lane) ballot |= (lanes[lane].value & 1u) << lane;
    for (int lane = 0; lane < WARP; ++lane) {
        Fiber& fiber = lanes[lane];
        const int width = fiber.width;
        const int segment = lane - lane % width;
        int source = lane;
        switch (op) {
            case Op::shfl_xor:
                source = lane ^ fiber.operand;
                if (source < segment || source >= segment + width) source = lane;
                break;
            case Op::shfl_down:
                source = lane + fiber.operand < segment + width ? lane + fiber.operand : lane;
                break;
            case Op::shfl_up:
                source = lane - fiber.operand >= segment ? lane - fiber.operand : lane;
                break;
            case Op::shfl_idx:
                source = segment + ((fiber.operand % width) + width) % width;
                break;
            default:
                break;
        }
        if (op == Op::ballot) {
            fiber.result = ballot;
        } else if (op == Op::any) {
            fiber.result = ballot != 0;
        } else if (op == Op::all) {
            fiber.result = ballot == 0xffffffffull;
        } else {
            fiber.result = lanes[source].value;
        }
        fiber.wait = Wait::none;
    }
}

// After every fiber ran until it waits: complete the warps whose 32 lanes wait at one
// collective; true if any did. Divergence is reported here.
inline bool settle_warps(std::vector<Fiber>& fibers) {
    bool progress = false;
    for (std::size_t first = 0; first < fibers.size(); first += WARP) {
        const std::size_t end = first + WARP < fibers.size() ? first + WARP : fibers.size();
        const Fiber* waiting = nullptr;
        for (std::size_t i = first; i < end; ++i) {
            if (fibers[i].wait == Wait::collective) waiting = &fibers[i];
        }
        if (waiting == nullptr) continue;
        if (end - first < static_cast<std::size_t>(WARP)) {
            fail(usage, "%s at @%zx@ in a warp of %zu threads: blocks of the emulation hold "
                 "whole warps (blockDim.x = %u)", OP_NAMES[static_cast<int>(waiting->op)],
                 code_offset(waiting->site), end - first, block_dim.x);
        }
        for (std::size_t i = first; i < end; ++i) {
            if (!same_call(fibers[i], *waiting)) {
                mismatch(divergence, *waiting, fibers[i], "warp divergence at a collective");
            }
        }
        complete_warp(fibers, static_cast<int>(first));
        progress = true;
    }
    return progress;
}

// Every live fiber waits at __syncthreads: release them, or report why they cannot go on.
inline void settle_barrier(std::vector<Fiber>& fibers) {
    const Fiber* waiting = nullptr;
    for (const Fiber& fiber : fibers) {
        if (fiber.wait == Wait::barrier) waiting = &fiber;
    }
    for (const Fiber& fiber : fibers) {
        if (!same_call(fiber, *waiting)) {
            mismatch(barrier_error, *waiting, fiber, "__syncthreads not reached by every thread");
        }
    }
    for (Fiber& fiber : fibers) fiber.wait = Wait::none;
}

[[noreturn]] inline void fiber_main() {
    entry_point(kernel_function, kernel_arguments);
    current->wait = Wait::exited;
    _longjmp(scheduler, 1);
}

inline void resume(Fiber& fiber, bool started) {
    current = &fiber;
    if (_setjmp(scheduler) == 0) {
        if (started) _longjmp(fiber.context, 1);
        setcontext(&fiber.start);
    }
    current = nullptr;
}

inline void run_block(std::vector<Fiber>& fibers, std::mt19937_64* order_rng) {
    for (const auto& [address, bytes] : shared_memory) std::memset(address, 0xff, bytes);
    std::vector<int> order(fibers.size());
    for (std::size_t i = 0; i < fibers.size(); ++i) {
        Fiber& fiber = fibers[i];
        fiber.wait = Wait::none;
        fiber.collectives = fiber.barriers = 0;
        fiber.site = nullptr;
        order[i] = static_cast<int>(i);
        getcontext(&fiber.start);
        fiber.start.uc_stack.ss_sp = fiber.stack;
        fiber.start.uc_stack.ss_size = STACK_BYTES;
        fiber.start.uc_link = nullptr;
        makecontext(&fiber.start, fiber_main, 0);
    }
    std::vector<bool> started(fibers.size(), false);
    while (true) {
        if (order_rng != nullptr) std::shuffle(order.begin(), order.end(), *order_rng);
        bool live = false;
        for (int i : order) {
            if (fibers[i].wait != Wait::none) continue;
            resume(fibers[i], started[i]);
            started[i] = true;
        }
        for (const Fiber& fiber : fibers) live = live || fiber.wait != Wait::exited;
        if (!live) return;
        if (!settle_warps(fibers)) settle_barrier(fibers);
    }
}

inline void ensure_stacks(std::size_t count) {
    if (count <= stack_count) return;
    if (stacks != nullptr) munmap(stacks, stack_count * (STACK_BYTES + 4096));
    const std::size_t bytes = count * (STACK_BYTES + 4096);
    stacks = static_cast<char*>(
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
             -1, 0));
    for (std::size_t i = 0; i < count; ++i) {  // a guard page under each stack
        mprotect(stacks + i * (STACK_BYTES + 4096), 4096, PROT_NONE);
    }
    stack_count = count;
}

}  // namespace emu

// -- arguments in guarded memory, faults -----------------------------------------------------

namespace emu {

constexpr std::size_t PAGE = 4096;
constexpr std::size_t WIDEST_LOAD = 16;

// [guard page][data pages, the copy ending at their end][guard page]. The copy keeps its
// original's address modulo the largest power of two (at most the widest load, 16 bytes)
// that divides its size, so a load is aligned exactly when the device's would be (a kernel
// loads w-byte words only from arrays whose size is a multiple of w). That leaves a gap
// before the guard only where the original itself is misaligned that way.
inline Region guarded_copy(const void* original, std::size_t bytes, bool writable) {
    Region region;
    const std::size_t data_pages = (bytes + WIDEST_LOAD + PAGE - 1) / PAGE;
    region.mapping_bytes = (data_pages + 2) * PAGE;
    region.mapping = static_cast<char*>(mmap(nullptr, region.mapping_bytes,
                                             PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    char* end = region.mapping + (data_pages + 1) * PAGE;
    const std::size_t lowest_bit = bytes & (~bytes + 1);
    const std::size_t modulus = bytes == 0 || lowest_bit > WIDEST_LOAD ? WIDEST_LOAD : lowest_bit;
    std::uintptr_t start = reinterpret_cast<std::uintptr_t>(end) - bytes;
    const std::uintptr_t wanted = reinterpret_cast<std::uintptr_t>(original) % modulus;
    start -= (start - wanted) % modulus;
    region.data = reinterpret_cast<char*>(start);
    region.bytes = bytes;
    region.writable = writable;
    std::memset(region.mapping + PAGE, 0xff, data_pages * PAGE);
    if (bytes > 0) std::memcpy(region.data, original, bytes);
    mprotect(region.mapping, PAGE, PROT_NONE);
    mprotect(end, PAGE, PROT_NONE);
    if (!writable) mprotect(region.mapping + PAGE, data_pages * PAGE, PROT_READ);
    return region;
}

inline void release(std::vector<Region>& copies) {
    for (Region& region : copies) {
        if (region.mapping != nullptr) munmap(region.mapping, region.mapping_bytes);
    }
    copies.clear();
}

inline void locate_fault(std::uintptr_t address) {
    report->address = address;
    for (std::size_t i = 0; i < regions->size(); ++i) {
        const Region& region = (*regions)[i];
        const auto mapping = reinterpret_cast<std::uintptr_t>(region.mapping);
        if (address >= mapping && address < mapping + region.mapping_bytes) {
            report->argument = static_cast<int>(i);
            report->offset = static_cast<std::int64_t>(address) -
                             static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(region.data));
            return;
        }
    }
    if (stacks != nullptr) {
        const auto base = reinterpret_cast<std::uintptr_t>(stacks);
        if (address >= base && address < base + stack_count * (STACK_BYTES + PAGE)) {
            report->argument = -2;  // a fiber's stack guard: the stack overflowed
        }
    }
}

constexpr int CAUGHT[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
inline struct sigaction previous_actions[4];

inline void on_signal(int signal, siginfo_t* info, void* context) {
    if (!in_launch) {  // another thread's: give it to the handler we replaced, and return to
        for (int i = 0; i < 4; ++i) {  // fault again under that one
            if (CAUGHT[i] == signal) sigaction(signal, &previous_actions[i], nullptr);
        }
        return;
    }
    in_launch = 0;
    const auto* machine = static_cast<const ucontext_t*>(context);
    const auto pc = static_cast<std::uintptr_t>(machine->uc_mcontext.gregs[REG_RIP]);
    Dl_info where;
    std::uintptr_t offset = 0;
    if (dladdr(reinterpret_cast<void*>(pc), &where) != 0) {
        offset = pc - reinterpret_cast<std::uintptr_t>(where.dli_fbase);
    }
    report->code = signal == SIGILL ? trap : fault;
    if (current != nullptr) {
        const uint3 t = current->index;
        report->thread[0] = t.x, report->thread[1] = t.y, report->thread[2] = t.z;
    }
    report->block[0] = block_index.x, report->block[1] = block_index.y;
    report->block[2] = block_index.z;
    if (signal == SIGSEGV || signal == SIGBUS) {
        locate_fault(reinterpret_cast<std::uintptr_t>(info->si_addr));
    }
    std::snprintf(report->text, sizeof(report->text), "signal %d at @%zx@", signal, offset);
    siglongjmp(escape, 1);
}

struct Signals {  // our handlers for the launch, on a stack of their own; restored after
    stack_t previous_stack;
    std::vector<char> stack = std::vector<char>(1 << 16);

    Signals() {
        stack_t own{};
        own.ss_sp = stack.data();
        own.ss_size = stack.size();
        sigaltstack(&own, &previous_stack);
        struct sigaction action{};
        action.sa_sigaction = on_signal;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&action.sa_mask);
        for (int i = 0; i < 4; ++i) sigaction(CAUGHT[i], &action, &previous_actions[i]);
    }
    ~Signals() {
        for (int i = 0; i < 4; ++i) sigaction(CAUGHT[i], &previous_actions[i], nullptr);
        sigaltstack(&previous_stack, nullptr);
    }
};

// -- kernels and their signatures --------------------------------------------------------------

// "float", "const als_half*", ...: the type as the compiler spells it
template <typename T>
const char* spelled() {
    return __PRETTY_FUNCTION__;
}

template <typename... Args, std::size_t... I>
void invoke_unpacked(void (*kernel)(), void** arguments, std::index_sequence<I...>) {
    reinterpret_cast<void (*)(Args...)>(kernel)(*static_cast<Args*>(arguments[I])...);
}

template <typename... Args>
void invoke(void (*kernel)(), void** arguments) {
    invoke_unpacked<Args...>(kernel, arguments, std::index_sequence_for<Args...>{});
}

struct Kernel {
    const char* name;
    void (*function)();
    void (*entry)(void (*)(), void**);
    int arity;
    const char* (*const* types)();
};

template <typename... Args>
struct Types {
    static constexpr const char* (*table[sizeof...(Args) + 1])() = {&spelled<Args>..., nullptr};
};

template <typename... Args>
Kernel kernel(const char* name, void (*function)(Args...)) {
    return {name, reinterpret_cast<void (*)()>(function), &invoke<Args...>,
            static_cast<int>(sizeof...(Args)), Types<Args...>::table};
}

inline int run(const Kernel& kernel, const unsigned int* grid, const unsigned int* block,
               unsigned long long seed, void** arguments, const long long* bytes,
               const int* writable, Report* out) {
    std::vector<Region> copies(kernel.arity, Region{});  // by position; scalars have none
    std::vector<void*> pointers(kernel.arity);
    std::vector<void*> slots(kernel.arity);
    for (int i = 0; i < kernel.arity; ++i) {
        if (bytes[i] < 0) {  // a scalar: passed as it is
            slots[i] = arguments[i];
            continue;
        }
        void* original = *static_cast<void**>(arguments[i]);
        copies[i] = guarded_copy(original, static_cast<std::size_t>(bytes[i]), writable[i]);
        pointers[i] = copies[i].data;
        slots[i] = &pointers[i];
    }
    report = out;
    regions = &copies;
    entry_point = kernel.entry;
    kernel_function = kernel.function;
    kernel_arguments = slots.data();
    grid_dim = dim3{grid[0], grid[1], grid[2]};
    block_dim = dim3{block[0], block[1], block[2]};
    const std::size_t threads = std::size_t{block[0]} * block[1] * block[2];
    ensure_stacks(threads);
    std::vector<Fiber> fibers(threads);
    for (std::size_t i = 0; i < threads; ++i) {
        fibers[i].linear = static_cast<int>(i);
        fibers[i].index = uint3{static_cast<unsigned int>(i % block[0]),
                                static_cast<unsigned int>(i / block[0] % block[1]),
                                static_cast<unsigned int>(i / (std::size_t{block[0]} * block[1]))};
        fibers[i].stack = stacks + i * (STACK_BYTES + PAGE) + PAGE;
    }
    std::vector<uint3> blocks;
    for (unsigned int z = 0; z < grid[2]; ++z)
        for (unsigned int y = 0; y < grid[1]; ++y)
            for (unsigned int x = 0; x < grid[0]; ++x) blocks.push_back(uint3{x, y, z});
    std::mt19937_64 order_rng(seed);
    if (seed != 0) std::shuffle(blocks.begin(), blocks.end(), order_rng);
    {
        Signals signals;
        if (sigsetjmp(escape, 1) == 0) {
            in_launch = 1;
            for (const uint3& b : blocks) {
                block_index = b;
                run_block(fibers, seed != 0 ? &order_rng : nullptr);
            }
            in_launch = 0;
        }
    }
    current = nullptr;
    if (out->code == ok) {
        for (int i = 0; i < kernel.arity; ++i) {
            const Region& region = copies[i];
            if (bytes[i] > 0 && region.writable) {
                std::memcpy(*static_cast<void**>(arguments[i]), region.data, region.bytes);
            }
        }
    }
    release(copies);
    regions = nullptr;
    return out->code;
}

}  // namespace emu

// -- the library's C interface (tests/cuda_emulation/__init__.py declares every argtype) -------

extern "C" {
extern const emu::Kernel emu_kernels[];
extern const int emu_kernel_count;

__attribute__((visibility("default"))) int emu_kernels_compiled() { return emu_kernel_count; }

__attribute__((visibility("default"))) const char* emu_kernel_name(int kernel) {
    return emu_kernels[kernel].name;
}

__attribute__((visibility("default"))) int emu_kernel_arity(int kernel) {
    return emu_kernels[kernel].arity;
}

__attribute__((visibility("default"))) const char* emu_kernel_parameter(int kernel,
                                                                               int index) {
    return emu_kernels[kernel].types[index]();
}

__attribute__((visibility("default"))) std::uintptr_t emu_image_base() {
    Dl_info info;
    dladdr(reinterpret_cast<void*>(&emu_image_base), &info);
    return reinterpret_cast<std::uintptr_t>(info.dli_fbase);
}

// The __shared__ variables (function-local statics of the kernels), found in the symbol table
__attribute__((visibility("default"))) void emu_set_shared(void* const* addresses,
                                                                  const std::size_t* bytes,
                                                                  int count) {
    emu::shared_memory.clear();
    for (int i = 0; i < count; ++i) emu::shared_memory.emplace_back(addresses[i], bytes[i]);
}

__attribute__((visibility("default"))) int emu_launch(
    int kernel, const unsigned int* grid, const unsigned int* block, unsigned long long seed,
    void** arguments, const long long* bytes, const int* writable, emu::Report* out) {
    std::memset(out, 0, sizeof(*out));
    out->argument = -1;
    return emu::run(emu_kernels[kernel], grid, block, seed, arguments, bytes, writable, out);
}
}
