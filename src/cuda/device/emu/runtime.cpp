// The emulated device's runtime, loaded once per process before any kernel module:
// - fibers: one per CUDA thread, on stack regions aligned to their size (the header of each
//   region is the `emu::Thread` kernels read), reused from block to block, never zero-filled;
// - the block scheduler: a block's fibers run on one OS thread, each until it waits at a barrier
//   or a warp collective, under one of four schedules (`EmuSchedule`); a barrier that not every
//   thread reaches, a collective that cannot complete and a mask that names missing lanes are
//   reported with the kernel's name and block instead of hanging;
// - device memory: every buffer ends (and starts) at an inaccessible guard page, so an access
//   past either end faults; a fault inside a kernel becomes the launch's error;
// - worker threads: the blocks of a launch spread over the cores.
// (the loader places `#define EMU_RUNTIME` and cuda_emu.h before this file)
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csetjmp>
#include <cstdarg>
#include <csignal>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
#define EMU_ASM_SWITCH 1
#endif

// The order in which a block's threads run between barriers. Each thread runs until it waits (at a
// barrier or a warp collective) or exits; a pass gives every thread that can run one turn.
// - THREADS_IN_ORDER: passes over the threads in index order;
// - THREADS_SHUFFLED: passes over the threads in a seeded random order, drawn anew each pass;
// - WARPS_FORWARD: warp 0's lanes until none of them can run (all wait at the barrier or have
//   exited), then warp 1's, and so on; the lanes of a warp in index order;
// - WARPS_REVERSE: the same from the last warp to the first, the lanes of a warp in a seeded
//   random order (drawn anew each pass over the warp) when the seed is not 0.
// Shuffling threads hides a race between warps when the warp collectives before the conflicting
// access hold one side back for several passes (a warp that reads a shared array, sums over its
// lanes and writes the array again for the next round: every read of the round happens in the
// first pass, every write passes later). A warp-serial schedule runs one warp through its
// collectives to the barrier before the next warp starts, so any two warps meet in both orders
// over the two warp-serial schedules, and a missing barrier between them changes the bits.
enum EmuSchedule { THREADS_IN_ORDER, THREADS_SHUFFLED, WARPS_FORWARD, WARPS_REVERSE };

struct EmuLaunchDesc {
    void (*kernel)(void**);
    void** args;
    void (*module_tls)(void**, size_t*);
    const char* name;
    unsigned grid[3];
    unsigned block[3];
    size_t dyn_smem;
    int schedule;   // an EmuSchedule
    uint64_t seed;  // of the random orders
    int poison;     // the byte fresh shared memory is filled with
    char* error;
    size_t error_cap;
};

#ifdef EMU_ASM_SWITCH
// Saves the callee-saved registers on the current stack, stores the stack pointer in *save and
// continues on `load`'s stack: a switch with no system call (glibc's swapcontext also saves the
// signal mask with one).
extern "C" void emu_switch(void** save, void* load);
extern "C" void emu_fiber_start();
asm(R"(
    .text
    .p2align 4
    .globl emu_switch
    .hidden emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch

    .p2align 4
    .globl emu_fiber_start
    .hidden emu_fiber_start
    .type emu_fiber_start, @function
emu_fiber_start:
    movq %rbx, %rdi
    call emu_fiber_main
    ud2
    .size emu_fiber_start, .-emu_fiber_start
)");
#endif
extern "C" void emu_fiber_main(void* fiber);

namespace emu {
namespace {

// ---------------------------------------------------------------- fiber contexts

#ifdef EMU_ASM_SWITCH
struct Context {
    void* sp;
};
#else
struct Context {
    ucontext_t uc;
};
#endif

enum State : int { READY, AT_BARRIER, AT_WARP, EXITED };

struct Worker;

// The header of a fiber's stack region.
struct Fiber {
    Thread t;  // first: kernels find it by masking their stack pointer
    Context ctx;
    Worker* worker;
    int state;
    unsigned lane, warp;
    const char* file;  // where it waits
    int line;
    int coll;  // the warp collective it waits in
};

// A warp operation under way: lanes join until every lane of `mask` has arrived.
struct Collective {
    bool open;
    int op, arg, width;
    unsigned mask, arrived;
    const char* file;
    int line;
    int readers;  // lanes still to read their result
    uint64_t value[32];
    uint64_t result[32];
};

struct Launch {
    const EmuLaunchDesc* d;
    unsigned nblocks;
    std::atomic<unsigned> next{0};
    std::atomic<bool> failed{false};
    int running = 0;  // workers inside it; guarded by the pool's mutex
    std::mutex error_mu;
    std::string error;
};

struct TlsBlock {
    void (*module)(void**, size_t*);
    void* data;
    size_t size;
};

struct Worker {
    char* regions = nullptr;  // fiber stack regions, kStackRegion each
    unsigned capacity = 0;
    size_t page = 4096;
    std::vector<Fiber*> fibers;
    Context sched;
    sigjmp_buf jmp;
    volatile sig_atomic_t in_fiber = 0;
    // A fault caught by the signal handler.
    int fault_sig = 0, fault_code = 0, fault_write = -1;
    uintptr_t fault_addr = 0;
    // The block being run.
    Launch* launch = nullptr;
    Fiber* current = nullptr;
    unsigned n = 0, ready = 0, at_barrier = 0, exited = 0;
    unsigned cursor = 0;  // the next position of `order` this pass looks at
    // The barrier being gathered: where the first thread waits, whether any waits elsewhere, and
    // the reductions of __syncthreads_count/_and/_or.
    const char* bar_file = nullptr;
    int bar_line = 0;
    bool bar_mixed = false;
    int bar_count = 0, bar_all = 1, bar_any = 0;
    int bar_result = 0;
    bool failed = false;
    std::string error;
    std::vector<unsigned char> dyn;
    std::vector<std::vector<Collective>> warps;
    std::vector<TlsBlock> tls;
    std::vector<unsigned> order;
    uint64_t rng = 0;
    // Warp-serial schedules: the warps in the order they run, the warp being run (its place in
    // `warp_order`) and the next place in `lanes`, the order of its lanes.
    std::vector<unsigned> warp_order;
    unsigned warp_cursor = 0, lane_cursor = 0;
    unsigned lanes[32];
    bool shuffle_lanes = false;
};

// Read by the signal handler: initial-exec, so reading it never allocates.
thread_local Worker* tls_worker __attribute__((tls_model("initial-exec"))) = nullptr;

Fiber* current_fiber() { return reinterpret_cast<Fiber*>(self()); }

[[noreturn]] void fiber_exit(Fiber* f);

void fiber_main(Fiber* f) {
    f->worker->launch->d->kernel(f->worker->launch->d->args);
    fiber_exit(f);
}

#ifdef EMU_ASM_SWITCH
void ctx_switch(Context* from, Context* to) { emu_switch(&from->sp, to->sp); }

void ctx_make(Context* c, char* stack_lo, char* stack_hi, Fiber* f) {
    (void)stack_lo;
    // Popped by emu_switch: r15 r14 r13 r12 rbx(= the fiber) rbp, then the return address;
    // after the `ret` the stack pointer is 16-byte aligned, as emu_fiber_start's call needs.
    uintptr_t* sp = reinterpret_cast<uintptr_t*>(stack_hi) - 7;
    sp[0] = sp[1] = sp[2] = sp[3] = 0;
    sp[4] = reinterpret_cast<uintptr_t>(f);
    sp[5] = 0;
    sp[6] = reinterpret_cast<uintptr_t>(&emu_fiber_start);
    c->sp = sp;
}
#else
void ctx_switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }

void ucontext_entry(unsigned lo, unsigned hi) {
    fiber_main(reinterpret_cast<Fiber*>((static_cast<uintptr_t>(hi) << 32) | lo));
}

void ctx_make(Context* c, char* stack_lo, char* stack_hi, Fiber* f) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack_lo;
    c->uc.uc_stack.ss_size = static_cast<size_t>(stack_hi - stack_lo);
    c->uc.uc_link = nullptr;
    uintptr_t p = reinterpret_cast<uintptr_t>(f);
    makecontext(&c->uc, reinterpret_cast<void (*)()>(&ucontext_entry), 2,
                static_cast<unsigned>(p & 0xffffffffu), static_cast<unsigned>(p >> 32));
}
#endif

// ---------------------------------------------------------------- messages

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}

std::string xyz(const uint3& v) { return fmt("(%u,%u,%u)", v.x, v.y, v.z); }
std::string xyz(const dim3& v) { return fmt("(%u,%u,%u)", v.x, v.y, v.z); }

// "0-31, 40, 64-95": the thread indices for which `pick` holds.
template <class P>
std::string ranges(Worker* w, P pick) {
    std::string s;
    unsigned i = 0, shown = 0;
    while (i < w->n) {
        if (!pick(w->fibers[i])) {
            i++;
            continue;
        }
        unsigned j = i;
        while (j + 1 < w->n && pick(w->fibers[j + 1])) j++;
        if (shown++ == 8) {
            s += ", ...";
            break;
        }
        if (!s.empty()) s += ", ";
        s += i == j ? fmt("%u", i) : fmt("%u-%u", i, j);
        i = j + 1;
    }
    return s;
}

std::string where_block(Worker* w) {
    const Thread& t = w->fibers[0]->t;
    return fmt("kernel %s, block %s of a %s grid of %s blocks", w->launch->d->name, xyz(t.bid).c_str(),
               xyz(t.gdim).c_str(), xyz(t.bdim).c_str());
}

// Ends the block with an error raised inside a fiber: back to the scheduler, never resumed.
[[noreturn]] void fiber_fail(Fiber* f, const std::string& what) {
    Worker* w = f->worker;
    w->failed = true;
    w->error = fmt("%s, thread %s: %s", where_block(w).c_str(), xyz(f->t.tid).c_str(), what.c_str());
    ctx_switch(&f->ctx, &w->sched);
    __builtin_trap();
}

uint64_t splitmix(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void shuffle(unsigned* v, unsigned n, uint64_t& rng) {
    for (unsigned i = n; i > 1; i--) std::swap(v[i - 1], v[splitmix(rng) % i]);
}

// A new pass over the lanes of the warp being run.
void start_lanes(Worker* w) {
    w->lane_cursor = 0;
    if (w->shuffle_lanes) shuffle(w->lanes, 32, w->rng);
}

// The next fiber of a warp-serial pass: the warp being run keeps the turn while any of its lanes
// can run (a collective its last lane completed wakes the others), then the next warp takes it.
Fiber* next_ready_warp_serial(Worker* w) {
    while (w->warp_cursor < w->warp_order.size()) {
        unsigned base = w->warp_order[w->warp_cursor] * 32;
        unsigned width = std::min(32u, w->n - base);
        while (w->lane_cursor < 32) {
            unsigned l = w->lanes[w->lane_cursor++];
            if (l < width && w->fibers[base + l]->state == READY) return w->fibers[base + l];
        }
        bool again = false;
        for (unsigned l = 0; l < width && !again; l++) again = w->fibers[base + l]->state == READY;
        if (!again) w->warp_cursor++;
        start_lanes(w);
    }
    return nullptr;
}

// The next fiber of this pass that can run, or null when the pass is over.
Fiber* next_ready(Worker* w) {
    if (w->launch->d->schedule >= WARPS_FORWARD) return next_ready_warp_serial(w);
    while (w->cursor < w->n) {
        Fiber* f = w->fibers[w->order[w->cursor++]];
        if (f->state == READY) return f;
    }
    return nullptr;
}

// Leaves the running fiber, which has just stopped being READY, for the pass's next runnable
// fiber (straight there, not through the scheduler), or for the scheduler when the pass is over.
void leave(Fiber* f) {
    Worker* w = f->worker;
    if (Fiber* g = next_ready(w)) {
        w->current = g;
        ctx_switch(&f->ctx, &g->ctx);
    } else {
        ctx_switch(&f->ctx, &w->sched);
    }
}

[[noreturn]] void fiber_exit(Fiber* f) {
    Worker* w = f->worker;
    f->state = EXITED;
    w->ready--;
    w->exited++;
    leave(f);
    __builtin_trap();
}

// ---------------------------------------------------------------- device memory

struct Alloc {
    uintptr_t region, region_end, user;
    size_t bytes;
};
std::mutex alloc_mu;
std::map<uintptr_t, Alloc> allocs;  // by region start
std::deque<Alloc> freed;            // the most recent frees, to name a use after free
size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// What a faulting address was, as far as the allocations and fiber stacks tell.
std::string describe_address(Worker* w, uintptr_t a) {
    std::lock_guard<std::mutex> g(alloc_mu);
    auto in = [&](const Alloc& x) { return a >= x.region && a < x.region_end; };
    auto rel = [&](const Alloc& x, const char* state) {
        if (a < x.user)
            return fmt("%zu bytes before the start of a%s buffer of %zu bytes at %#lx", x.user - a, state,
                       x.bytes, static_cast<unsigned long>(x.user));
        if (a >= x.user + x.bytes)
            return fmt("%zu bytes past the end of a%s buffer of %zu bytes at %#lx", a - (x.user + x.bytes),
                       state, x.bytes, static_cast<unsigned long>(x.user));
        return fmt("inside a%s buffer of %zu bytes at %#lx", state, x.bytes, static_cast<unsigned long>(x.user));
    };
    auto it = allocs.upper_bound(a);
    if (it != allocs.begin() && in(std::prev(it)->second)) return rel(std::prev(it)->second, "");
    for (auto f = freed.rbegin(); f != freed.rend(); ++f)
        if (in(*f)) return rel(*f, " freed");
    uintptr_t lo = reinterpret_cast<uintptr_t>(w->regions);
    if (a >= lo && a < lo + static_cast<uintptr_t>(w->capacity) * kStackRegion) {
        uintptr_t off = (a - lo) % kStackRegion;
        if (off >= w->page && off < 2 * w->page)
            return fmt("the guard page of a fiber stack: stack overflow (stacks hold %zu KiB)",
                       static_cast<size_t>((kStackRegion - 2 * w->page) / 1024));
    }
    return "outside every device buffer";
}

// ---------------------------------------------------------------- faults

struct sigaction previous[3];
const int kSignals[3] = {SIGSEGV, SIGBUS, SIGFPE};

void on_fault(int sig, siginfo_t* si, void* uc) {
    Worker* w = tls_worker;
    if (w && w->in_fiber) {
        w->in_fiber = 0;
        w->fault_sig = sig;
        w->fault_code = si->si_code;
        w->fault_addr = reinterpret_cast<uintptr_t>(si->si_addr);
        w->fault_write = -1;
#if defined(__x86_64__)
        if (sig == SIGSEGV) w->fault_write = (static_cast<ucontext_t*>(uc)->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#endif
        siglongjmp(w->jmp, 1);
    }
    // Not a kernel's: whatever handled it before us (Rust's stack-overflow report, or the default).
    for (int i = 0; i < 3; i++) {
        if (kSignals[i] != sig) continue;
        struct sigaction& p = previous[i];
        if (p.sa_flags & SA_SIGINFO) {
            p.sa_sigaction(sig, si, uc);
        } else if (p.sa_handler == SIG_DFL || p.sa_handler == SIG_IGN) {
            signal(sig, SIG_DFL);  // the faulting instruction runs again and ends the process
        } else {
            p.sa_handler(sig);
        }
    }
}

void install_fault_handler() {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; i++) sigaction(kSignals[i], &sa, &previous[i]);
}

std::string fault_message(Worker* w) {
    Fiber* f = w->current;
    std::string what;
    if (w->fault_sig == SIGFPE)
        what = w->fault_code == FPE_INTDIV ? "integer division by zero" : "arithmetic fault";
    else
        what = fmt("invalid %s at %#lx: %s",
                   w->fault_write == 1 ? "write" : (w->fault_write == 0 ? "read" : "access"),
                   static_cast<unsigned long>(w->fault_addr), describe_address(w, w->fault_addr).c_str());
    return fmt("%s, thread %s: %s", where_block(w).c_str(), f ? xyz(f->t.tid).c_str() : "?", what.c_str());
}

// ---------------------------------------------------------------- the block scheduler

void ensure_fibers(Worker* w, unsigned n) {
    if (n <= w->capacity) return;
    const unsigned cap = 1024;  // the most threads a block may have
    size_t bytes = static_cast<size_t>(cap) * kStackRegion;
    // Over-allocate by one region so the start can be aligned to the region size.
    char* raw = static_cast<char*>(mmap(nullptr, bytes + kStackRegion, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (raw == MAP_FAILED) {
        fprintf(stderr, "emulated device: cannot map %zu bytes of fiber stacks\n", bytes);
        abort();
    }
    uintptr_t at = (reinterpret_cast<uintptr_t>(raw) + kStackRegion - 1) & ~(kStackRegion - 1);
    w->regions = reinterpret_cast<char*>(at);
    w->page = page_size();
    w->fibers.resize(cap);
    for (unsigned i = 0; i < cap; i++) {
        char* r = w->regions + static_cast<size_t>(i) * kStackRegion;
        mprotect(r + w->page, w->page, PROT_NONE);  // overflowing the stack faults here
        w->fibers[i] = new (r) Fiber();
    }
    w->capacity = cap;
}

void poison_shared(Worker* w, const EmuLaunchDesc* d) {
    TlsBlock* b = nullptr;
    for (auto& t : w->tls)
        if (t.module == d->module_tls) b = &t;
    if (!b) {
        TlsBlock t = {d->module_tls, nullptr, 0};
        d->module_tls(&t.data, &t.size);
        w->tls.push_back(t);
        b = &w->tls.back();
    }
    if (b->data) memset(b->data, d->poison, b->size);
    if (w->dyn.size() < d->dyn_smem) w->dyn.resize(d->dyn_smem);
    if (d->dyn_smem) memset(w->dyn.data(), d->poison, d->dyn_smem);
}

// Releases the barrier every live thread waits at, or explains why it cannot be released.
bool release_barrier(Worker* w) {
    unsigned live = w->n - w->exited;
    if (w->at_barrier == live && w->exited == 0) {
        Fiber* first = w->fibers[0];
        for (unsigned i = 1; i < w->n && w->bar_mixed; i++) {
            Fiber* f = w->fibers[i];
            if (f->line != first->line || strcmp(f->file, first->file) != 0) {
                w->error = fmt("%s: threads wait at different __syncthreads: threads %s at %s:%d, threads %s at %s:%d",
                               where_block(w).c_str(),
                               ranges(w, [&](Fiber* g) { return g->line == first->line && !strcmp(g->file, first->file); }).c_str(),
                               first->file, first->line,
                               ranges(w, [&](Fiber* g) { return g->line == f->line && !strcmp(g->file, f->file); }).c_str(),
                               f->file, f->line);
                return false;
            }
        }
        for (unsigned i = 0; i < w->n; i++) w->fibers[i]->state = READY;
        w->ready = w->n;
        w->at_barrier = 0;
        // Each waiter reads its op's reduction from these: the count, and the and / or bits.
        w->bar_result = w->bar_count | (w->bar_all << 30) | (w->bar_any << 29);
        return true;
    }
    if (w->at_barrier > 0) {
        Fiber* b = nullptr;
        for (unsigned i = 0; i < w->n && !b; i++)
            if (w->fibers[i]->state == AT_BARRIER) b = w->fibers[i];
        std::string others;
        if (w->exited)
            others += fmt("threads %s have exited", ranges(w, [](Fiber* g) { return g->state == EXITED; }).c_str());
        if (w->at_barrier + w->exited < w->n) {
            if (!others.empty()) others += " and ";
            others += fmt("threads %s wait in warp operations",
                          ranges(w, [](Fiber* g) { return g->state == AT_WARP; }).c_str());
        }
        w->error = fmt("%s: divergent __syncthreads at %s:%d: threads %s wait there, but %s", where_block(w).c_str(),
                       b->file, b->line, ranges(w, [](Fiber* g) { return g->state == AT_BARRIER; }).c_str(),
                       others.c_str());
        return false;
    }
    // Only warp collectives wait: name one and the lanes it misses.
    for (unsigned i = 0; i < w->n; i++) {
        Fiber* f = w->fibers[i];
        if (f->state != AT_WARP) continue;
        Collective& c = w->warps[f->warp][f->coll];
        std::string missing;
        for (unsigned l = 0; l < 32; l++) {
            if (!(c.mask >> l & 1) || (c.arrived >> l & 1)) continue;
            Fiber* g = w->fibers[f->warp * 32 + l];
            if (!missing.empty()) missing += ", ";
            missing += fmt("lane %u %s", l, g->state == EXITED ? "has exited" : "waits elsewhere");
        }
        w->error = fmt("%s: the warp operation at %s:%d in warp %u (mask %#x) can never complete: %s",
                       where_block(w).c_str(), c.file, c.line, f->warp, c.mask, missing.c_str());
        return false;
    }
    w->error = fmt("%s: the scheduler found no thread to run", where_block(w).c_str());
    return false;
}

// Runs block `b` of the launch on this worker. False with w->error set on any failure.
bool run_block(Worker* w, Launch* L, unsigned b) {
    const EmuLaunchDesc* d = L->d;
    unsigned n = d->block[0] * d->block[1] * d->block[2];
    ensure_fibers(w, n);
    poison_shared(w, d);
    uint3 bid = {b % d->grid[0], (b / d->grid[0]) % d->grid[1], b / (d->grid[0] * d->grid[1])};
    w->launch = L;
    w->n = n;
    w->ready = n;
    w->at_barrier = w->exited = 0;
    w->failed = false;
    w->current = nullptr;
    unsigned nwarps = (n + 31) / 32;
    if (w->warps.size() < nwarps) w->warps.resize(nwarps);
    for (unsigned i = 0; i < nwarps; i++) w->warps[i].clear();
    for (unsigned i = 0; i < n; i++) {
        Fiber* f = w->fibers[i];
        f->t.tid = {i % d->block[0], (i / d->block[0]) % d->block[1], i / (d->block[0] * d->block[1])};
        f->t.bid = bid;
        f->t.bdim = dim3(d->block[0], d->block[1], d->block[2]);
        f->t.gdim = dim3(d->grid[0], d->grid[1], d->grid[2]);
        f->worker = w;
        f->state = READY;
        f->lane = i % 32;
        f->warp = i / 32;
        char* region = reinterpret_cast<char*>(f);
        ctx_make(&f->ctx, region + 2 * w->page, region + kStackRegion, f);
    }
    w->order.resize(n);
    for (unsigned i = 0; i < n; i++) w->order[i] = i;
    w->rng = d->seed ^ (0xA24BAED4963EE407ull * (b + 1));
    w->warp_order.resize(nwarps);
    for (unsigned i = 0; i < nwarps; i++) w->warp_order[i] = d->schedule == WARPS_REVERSE ? nwarps - 1 - i : i;
    for (unsigned l = 0; l < 32; l++) w->lanes[l] = l;
    w->shuffle_lanes = d->schedule == WARPS_REVERSE && d->seed != 0;

    if (sigsetjmp(w->jmp, 1)) {
        w->error = fault_message(w);
        return false;
    }
    // A pass runs every READY thread once, in `order`, each until it waits or exits; the threads
    // hand over to one another directly and the last one returns here.
    for (;;) {
        if (d->schedule == THREADS_SHUFFLED) shuffle(w->order.data(), n, w->rng);
        w->cursor = 0;
        w->warp_cursor = 0;
        start_lanes(w);
        if (Fiber* f = next_ready(w)) {
            w->current = f;
            w->in_fiber = 1;
            ctx_switch(&w->sched, &f->ctx);
            w->in_fiber = 0;
            if (w->failed) return false;
        }
        if (w->exited == n) return true;
        if (w->ready == 0 && !release_barrier(w)) return false;
    }
}

// ---------------------------------------------------------------- warp collectives

uint64_t lane_result(const Collective& c, unsigned lane, Worker* w, Fiber* f) {
    unsigned seg = lane & ~static_cast<unsigned>(c.width - 1);
    unsigned src = lane;
    switch (c.op) {
        case EMU_SHFL_IDX:
            src = seg + (static_cast<unsigned>(c.arg) & static_cast<unsigned>(c.width - 1));
            break;
        case EMU_SHFL_UP:
            src = lane - static_cast<unsigned>(c.arg);
            if (static_cast<int>(lane) - c.arg < static_cast<int>(seg)) src = lane;
            break;
        case EMU_SHFL_DOWN:
            src = lane + static_cast<unsigned>(c.arg);
            if (src >= seg + static_cast<unsigned>(c.width)) src = lane;
            break;
        case EMU_SHFL_XOR:
            src = lane ^ static_cast<unsigned>(c.arg);
            if (src >= seg + static_cast<unsigned>(c.width)) src = lane;  // later groups: own value
            break;
        case EMU_BALLOT: {
            uint64_t bits = 0;
            for (unsigned l = 0; l < 32; l++)
                if ((c.mask >> l & 1) && c.value[l]) bits |= 1ull << l;
            return bits;
        }
        case EMU_ANY:
        case EMU_ALL: {
            bool any = false, all = true;
            for (unsigned l = 0; l < 32; l++)
                if (c.mask >> l & 1) {
                    any |= c.value[l] != 0;
                    all &= c.value[l] != 0;
                }
            return c.op == EMU_ANY ? any : all;
        }
        default:
            return 0;
    }
    if (src >= 32 || !(c.mask >> src & 1)) {
        (void)w;
        fiber_fail(f, fmt("the shuffle at %s:%d makes lane %u read lane %u, which is not in its mask %#x",
                          c.file, c.line, lane, src, c.mask));
    }
    return c.value[src];
}

const char* op_name(int op) {
    static const char* names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                  "__ballot_sync", "__any_sync", "__all_sync", "__syncwarp"};
    return op >= 0 && op < 8 ? names[op] : "a warp operation";
}

}  // namespace
}  // namespace emu

using namespace emu;

extern "C" __attribute__((visibility("hidden"))) void emu_fiber_main(void* fiber) {
    fiber_main(static_cast<Fiber*>(fiber));
}

extern "C" int emu_rt_syncthreads(int pred, int op, const char* file, int line) {
    Fiber* f = current_fiber();
    Worker* w = f->worker;
    f->state = AT_BARRIER;
    f->file = file;
    f->line = line;
    if (w->at_barrier++ == 0) {
        w->bar_file = file;
        w->bar_line = line;
        w->bar_mixed = false;
        w->bar_count = 0;
        w->bar_all = 1;
        w->bar_any = 0;
    } else if (line != w->bar_line || (file != w->bar_file && strcmp(file, w->bar_file) != 0)) {
        w->bar_mixed = true;
    }
    w->bar_count += pred;
    w->bar_all &= pred;
    w->bar_any |= pred;
    w->ready--;
    leave(f);
    int r = w->bar_result;
    switch (op) {
        case 1: return r & ((1 << 29) - 1);
        case 2: return (r >> 30) & 1;
        case 3: return (r >> 29) & 1;
        default: return 0;
    }
}

extern "C" uint64_t emu_rt_warp(int op, unsigned mask, uint64_t value, int arg, int width, const char* file,
                                int line) {
    Fiber* f = current_fiber();
    Worker* w = f->worker;
    unsigned lane = f->lane, bit = 1u << lane;
    if (!(mask & bit))
        fiber_fail(f, fmt("%s at %s:%d: the mask %#x leaves out the calling lane %u", op_name(op), file, line, mask, lane));
    unsigned base = f->warp * 32;
    if (base + 32 > w->n && (mask >> (w->n - base)) != 0)
        fiber_fail(f, fmt("%s at %s:%d: the mask %#x names lanes past the block's last thread (%u threads)",
                          op_name(op), file, line, mask, w->n));
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fiber_fail(f, fmt("%s at %s:%d: width %d is not a power of two up to 32", op_name(op), file, line, width));
    auto& colls = w->warps[f->warp];
    int slot = -1;
    for (size_t i = 0; i < colls.size(); i++) {
        Collective& c = colls[i];
        if (c.open && c.mask == mask && !(c.arrived & bit) && c.readers < 0) {
            if (c.op != op)
                fiber_fail(f, fmt("lanes of warp %u with mask %#x meet at different warp operations: %s at %s:%d and %s at %s:%d",
                                  f->warp, mask, op_name(c.op), c.file, c.line, op_name(op), file, line));
            slot = static_cast<int>(i);
            break;
        }
    }
    if (slot < 0) {
        for (size_t i = 0; i < colls.size() && slot < 0; i++)
            if (!colls[i].open) slot = static_cast<int>(i);
        if (slot < 0) {
            colls.emplace_back();
            slot = static_cast<int>(colls.size() - 1);
        }
        Collective& c = colls[slot];
        c.open = true;
        c.op = op;
        c.arg = arg;
        c.width = width;
        c.mask = mask;
        c.arrived = 0;
        c.file = file;
        c.line = line;
        c.readers = -1;  // still gathering
    }
    Collective* c = &colls[slot];
    c->value[lane] = value;
    c->arrived |= bit;
    if (c->arrived != mask) {
        f->state = AT_WARP;
        f->coll = slot;
        w->ready--;
        leave(f);
        c = &w->warps[f->warp][slot];
        uint64_t r = c->result[lane];
        if (--c->readers == 0) c->open = false;
        return r;
    }
    // The last lane: every lane's result, then wake the others.
    for (unsigned l = 0; l < 32; l++)
        if (mask >> l & 1) c->result[l] = lane_result(*c, l, w, f);
    c->readers = __builtin_popcount(mask) - 1;
    if (c->readers == 0) c->open = false;
    for (unsigned l = 0; l < 32; l++) {
        if (!(mask >> l & 1) || l == lane) continue;
        Fiber* g = w->fibers[base + l];
        g->state = READY;
        w->ready++;
    }
    return c->result[lane];
}

extern "C" unsigned emu_rt_activemask(void) {
    Fiber* f = current_fiber();
    Worker* w = f->worker;
    unsigned m = 0, base = f->warp * 32;
    for (unsigned l = 0; l < 32 && base + l < w->n; l++)
        if (w->fibers[base + l]->state != EXITED) m |= 1u << l;
    return m;
}

extern "C" void* emu_dynamic_shared(void) { return current_fiber()->worker->dyn.data(); }

// ---------------------------------------------------------------- the worker pool and launches

namespace emu {
namespace {

struct Pool {
    std::mutex mu;
    std::condition_variable work, idle;
    std::vector<Launch*> launches;
    unsigned threads = 0;
};

Pool* pool = nullptr;
std::once_flag pool_once;

void work_on(Worker* w, Launch* L) {
    for (;;) {
        if (L->failed.load(std::memory_order_relaxed)) return;
        unsigned b = L->next.fetch_add(1);
        if (b >= L->nblocks) return;
        if (!run_block(w, L, b)) {
            std::lock_guard<std::mutex> g(L->error_mu);
            if (!L->failed.exchange(true)) L->error = w->error;
            return;
        }
    }
}

void worker_main() {
    // A signal stack of its own: a fault on a small fiber stack (or past its end) needs room.
    stack_t ss;
    ss.ss_size = 256 * 1024;
    ss.ss_sp = mmap(nullptr, ss.ss_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
    Worker* w = new Worker();
    tls_worker = w;
    std::unique_lock<std::mutex> lk(pool->mu);
    for (;;) {
        Launch* L = nullptr;
        for (Launch* x : pool->launches)
            if (x->next.load() < x->nblocks && !x->failed.load()) L = x;
        if (!L) {
            pool->work.wait(lk);
            continue;
        }
        L->running++;
        lk.unlock();
        work_on(w, L);
        lk.lock();
        if (--L->running == 0) pool->idle.notify_all();
    }
}

void start_pool() {
    pool = new Pool();  // lives as long as the process
    unsigned n = std::thread::hardware_concurrency();
    if (const char* e = getenv("PGSRM_EMU_THREADS")) n = static_cast<unsigned>(atoi(e));
    pool->threads = std::max(1u, n);
    install_fault_handler();
    for (unsigned i = 0; i < pool->threads; i++) std::thread(worker_main).detach();
}

}  // namespace
}  // namespace emu

extern "C" unsigned emu_rt_workers(void) {
    std::call_once(pool_once, start_pool);
    return pool->threads;
}

// Runs a kernel to completion: 0, or 1 with the reason in d->error.
extern "C" int emu_rt_launch(const EmuLaunchDesc* d) {
    std::call_once(pool_once, start_pool);
    Launch L;
    L.d = d;
    L.nblocks = d->grid[0] * d->grid[1] * d->grid[2];
    std::unique_lock<std::mutex> lk(pool->mu);
    pool->launches.push_back(&L);
    pool->work.notify_all();
    pool->idle.wait(lk, [&] { return (L.next.load() >= L.nblocks || L.failed.load()) && L.running == 0; });
    pool->launches.erase(std::find(pool->launches.begin(), pool->launches.end(), &L));
    lk.unlock();
    if (!L.failed.load()) return 0;
    snprintf(d->error, d->error_cap, "%s", L.error.c_str());
    return 1;
}

extern "C" void* emu_rt_alloc(size_t bytes, size_t align) {
    size_t page = page_size();
    if (align == 0) align = 1;
    size_t rounded = (bytes + align - 1) / align * align;
    size_t span = (rounded + page - 1) / page * page;
    size_t total = span + 2 * page;
    char* r = static_cast<char*>(mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (r == MAP_FAILED) return nullptr;
    mprotect(r, page, PROT_NONE);
    mprotect(r + page + span, page, PROT_NONE);
    Alloc a;
    a.region = reinterpret_cast<uintptr_t>(r);
    a.region_end = a.region + total;
    a.user = a.region + page + span - rounded;  // the buffer ends where the guard page starts
    a.bytes = bytes;
    std::lock_guard<std::mutex> g(alloc_mu);
    allocs[a.region] = a;
    return reinterpret_cast<void*>(a.user);
}

extern "C" void emu_rt_free(void* p) {
    uintptr_t u = reinterpret_cast<uintptr_t>(p);
    std::lock_guard<std::mutex> g(alloc_mu);
    auto it = allocs.upper_bound(u);
    if (it == allocs.begin()) return;
    --it;
    Alloc a = it->second;
    if (a.user != u) return;
    allocs.erase(it);
    munmap(reinterpret_cast<void*>(a.region), a.region_end - a.region);
    freed.push_back(a);
    if (freed.size() > 256) freed.pop_front();
}
