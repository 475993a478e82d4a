//! The PVH start of day: the same image started by a Xen-compatible hypervisor as an HVM
//! guest at `XEN_ELFNOTE_PHYS32_ENTRY` (32-bit protected mode, paging off, EBX = physical
//! address of `hvm_start_info`; Xen's `docs/misc/pvh.pandoc`).
//!
//! The entry enters long mode itself with an identity map of the first GiB in 2 MiB pages
//! (the image links virtual = physical), finds Xen's CPUID leaves, has the hypervisor fill
//! the hypercall page through the MSR those leaves name (its stubs use `vmcall`), maps the
//! shared-info page with `XENMEM_add_to_physmap`, and runs the selftest checks that apply to
//! an HVM guest. The command line word `pvh-triple-fault` makes it triple-fault on purpose
//! instead (the hypervisor must crash only this domain).
//!
//! After the checks, `bench` measures the PVH figures (hypercalls through `vmcall`),
//! `grant ...` grants pages of its own (guest frames) or maps others' grants at
//! guest-physical addresses,
//! `xenbus-test` uses xenstore and its console ring (found with `HVMOP_get_param`), and a
//! `pingpong` command line runs the same ping-pong as a PV domain,
//! with events delivered the HVM way: an IDT gate at [`CALLBACK_VECTOR`] registered with
//! `HVM_PARAM_CALLBACK_IRQ`, whose handler runs the same event dispatch as the PV upcall,
//! and waits that halt with interrupts enabled (`sti; hlt`, see [`wait_for_event`]).

use core::arch::{global_asm, x86_64::__cpuid};
use core::ptr::{addr_of, addr_of_mut};

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use hypercall_abi::hvm::{HvmCallbackVia, HvmParam, HvmStartInfo, XEN_HVM_START_MAGIC_VALUE};
use hypercall_abi::memory::{MemoryOp, XenAddToPhysmap, XenMapSpace};
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::DOMID_SELF;
use pvguest::cmdline::{self, Mode};
use pvguest::ensure;
use pvguest::selftest::{CheckResult, Tally};

use super::{entry, pv};

global_asm!(
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long {note_phys32_entry}
    .asciz "Xen"
    .long pvh_start32
    .popsection

    .section .text.pvh32, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    cld
    movl $pvh_stack_top, %esp
    movl %ebx, %edi
    /* PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = i * 2 MiB (present, writable, large). */
    movl $pvh_pdpt + 3, pvh_pml4
    movl $pvh_pd + 3, pvh_pdpt
    /* PDPT[3] -> PD_HI, PD_HI[503] = the 2 MiB at 0xfee00000, where the hypervisor puts the
       special pages (xenstore and console rings) just below 0xff000000. */
    movl $pvh_pd_hi + 3, pvh_pdpt + 24
    movl $0xfee00083, pvh_pd_hi + 503 * 8
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax
    movl %eax, pvh_pd(,%ecx,8)
    incl %ecx
    cmpl $512, %ecx
    jne 1b
    movl %cr4, %eax
    orl $0x20, %eax             /* PAE */
    movl %eax, %cr4
    movl $pvh_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax            /* EFER.LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax       /* PG | PE */
    movl %eax, %cr0
    lgdt pvh_gdt_ptr
    ljmp $0x08, $pvh_start64

    .code64
pvh_start64:
    movl $0x10, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    movl $pvh_stack_top, %esp
    movl %edi, %edi
    xorl %ebp, %ebp
    call pvh_main
    ud2

    /* The event-channel callback: an interrupt gate, interrupts off. The CPU aligned RSP to
       16 bytes before its 40-byte frame, so after nine pushes RSP is 16-byte aligned for
       the call. The kernel is built without SSE and without a red zone. */
    .globl pvh_callback_entry
pvh_callback_entry:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    call pvh_callback
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    iretq

    .section .data.pvh, "aw"
    .balign 8
pvh_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
pvh_gdt_ptr:
    .word 23
    .long pvh_gdt

    .section .bss.pvh, "aw", @nobits
    .balign 4096
pvh_pml4: .skip 4096
pvh_pdpt: .skip 4096
pvh_pd: .skip 4096
pvh_pd_hi: .skip 4096
pvh_stack: .skip 32768
pvh_stack_top:
    .text
    "#,
    note_phys32_entry = const hypercall_abi::elfnote::XenElfnote::Phys32Entry as u32,
    options(att_syntax)
);

/// The IDT vector hv raises for event-channel upcalls.
pub const CALLBACK_VECTOR: u8 = 0xf3;
/// The 64-bit code selector of the PVH GDT.
const CODE64: u16 = 0x08;

extern "C" {
    fn pvh_callback_entry();
}

/// The IDT: only [`CALLBACK_VECTOR`] has a gate; any exception finds a not-present entry and
/// ends in a triple fault, which the hypervisor reports as this domain's crash.
#[repr(C, align(16))]
struct Idt(UnsafeCell<[u64; 512]>);
// SAFETY: written once by `enable_events` before `lidt`, on the one vCPU; the CPU only reads
// it afterwards.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([0; 512]));

/// Whether the kernel runs as PVH (events arrive through the callback vector).
static RUNNING_AS_PVH: AtomicBool = AtomicBool::new(false);

/// Whether this kernel was started as PVH.
pub fn is_pvh() -> bool {
    RUNNING_AS_PVH.load(Ordering::Relaxed)
}

/// The event-channel callback: the same dispatch as the PV upcall.
#[no_mangle]
extern "C" fn pvh_callback() {
    super::events::upcall();
}

/// Installs the callback gate, loads the IDT and asks the hypervisor to deliver upcalls at
/// [`CALLBACK_VECTOR`]. Interrupts stay disabled until [`wait_for_event`].
fn enable_events() -> Result<(), alloc::string::String> {
    let handler = pvh_callback_entry as *const () as u64;
    // Interrupt gate (type 0xe), present, DPL 0, no IST (SDM Vol. 3A 6.14.1).
    let low = (handler & 0xffff)
        | u64::from(CODE64) << 16
        | 0x8e00u64 << 32
        | ((handler >> 16) & 0xffff) << 48;
    let high = handler >> 32;
    let slot = usize::from(CALLBACK_VECTOR) * 2;
    // SAFETY: nothing reads the IDT before the `lidt` below (interrupts are off).
    unsafe {
        let idt = &mut *IDT.0.get();
        idt[slot] = low;
        idt[slot + 1] = high;
    }
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer {
        limit: (512 * 8 - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is a static with a valid gate for the only interrupt that can come.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &ptr, options(nostack, readonly)) };
    RUNNING_AS_PVH.store(true, Ordering::Relaxed);
    let via = HvmCallbackVia::Vector(CALLBACK_VECTOR).encode();
    // SAFETY: the vector has its gate, and the handler only runs the event dispatch.
    unsafe { pv::hypercalls().hvm_set_param(HvmParam::CallbackIrq, via) }
        .map(|_| ())
        .map_err(|e| alloc::format!("set_param(CALLBACK_IRQ): {e}"))
}

/// Halts until an event: `sti; hlt` (the STI shadow covers the `hlt`, so an upcall cannot
/// slip in between and leave the vCPU halted), the callback runs the handlers, then
/// interrupts go off again.
pub fn wait_for_event() {
    // SAFETY: the IDT has the callback gate (`enable_events` ran before any wait); the
    // handler preserves every register the interrupted code uses.
    unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
}

/// Pages of the image the PVH `grant` mode uses: a granter's grant table (its RAM page is
/// replaced by the table frame through `XENMEM_add_to_physmap`) and granted pages, a
/// mapper's page to map grants at and page to copy into.
#[repr(C, align(4096))]
struct GrantPages(UnsafeCell<[[u8; 4096]; GRANT_PAGES]>);
// SAFETY: one vCPU; each page is handed out once by `PvhPages` and then used by one owner.
unsafe impl Sync for GrantPages {}

const GRANT_PAGES: usize = 3;
static GRANT_PAGES_AREA: GrantPages = GrantPages(UnsafeCell::new([[0; 4096]; GRANT_PAGES]));

/// A PVH guest's pages for `grant`: frame numbers are guest frames (the image is identity
/// mapped, so a page's frame is its address / 4096).
struct PvhPages {
    /// Pages handed out so far.
    used: usize,
}

impl PvhPages {
    fn next_page(&mut self) -> Result<u64, alloc::string::String> {
        if self.used >= GRANT_PAGES {
            return Err("out of PVH grant pages".into());
        }
        // SAFETY: only computes the address of page `used` of the static area.
        let va = unsafe { (*GRANT_PAGES_AREA.0.get()).as_ptr().add(self.used) } as u64;
        self.used += 1;
        Ok(va)
    }
}

impl super::pair::GrantPages for PvhPages {
    fn own_table(&mut self) -> Result<pvguest::front::grant::GrantTable, alloc::string::String> {
        let va = self.next_page()?;
        let mut arg = XenAddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: XenMapSpace::GrantTable as u32,
            idx: 0,
            gpfn: va >> 12,
        };
        // SAFETY: puts grant-table frame 0 at a page of the image only this granter uses.
        unsafe { pv::hypercalls().memory_op(MemoryOp::AddToPhysmap, &mut arg) }
            .map_err(|e| alloc::format!("add_to_physmap(grant table): {e}"))?;
        // SAFETY: `va` now maps the table frame, for the rest of the run, and nothing else
        // refers to it; one frame holds GRANT_ENTRIES_V1_PER_PAGE entries.
        Ok(unsafe {
            pvguest::front::grant::GrantTable::new(
                va as *mut hypercall_abi::grant_table::GrantEntryV1,
                hypercall_abi::grant_table::GRANT_ENTRIES_V1_PER_PAGE as u32,
            )
        })
    }

    fn fresh_page(&mut self) -> Result<(u64, u64), alloc::string::String> {
        let va = self.next_page()?;
        Ok((va >> 12, va))
    }

    /// A page of the image: the hypervisor maps the grant at its guest-physical address
    /// (which the identity map makes its virtual one too) and puts the RAM back on unmap.
    fn map_slot(&mut self) -> Result<u64, alloc::string::String> {
        self.next_page()
    }
}

/// A PVH domU's rings: guest frames and ports from `HVMOP_get_param`, at the addresses the
/// boot page tables map them (identity: the first GiB, and the special pages below
/// 0xff000000).
fn ring_places() -> Result<super::xenbus_test::RingPlaces, alloc::string::String> {
    let hc = pv::hypercalls();
    let param = |index| {
        hc.hvm_get_param(index)
            .map_err(|e| alloc::format!("get_param({index:?}): {e}"))
    };
    let port = |index| {
        param(index).and_then(|v| u32::try_from(v).map_err(|_| alloc::format!("{index:?} {v:#x}")))
    };
    let mapped = |index| {
        param(index).and_then(|pfn| match pfn << 12 {
            va @ (0x1000..0x4000_0000 | 0xfee0_0000..0xff00_0000) => Ok(va),
            va => Err(alloc::format!("{index:?} at {va:#x} is not mapped")),
        })
    };
    let places = super::xenbus_test::RingPlaces {
        store_va: mapped(HvmParam::StorePfn)?,
        store_port: port(HvmParam::StoreEvtchn)?,
        console_va: mapped(HvmParam::ConsolePfn)?,
        console_port: port(HvmParam::ConsoleEvtchn)?,
    };
    println!(
        "xenbus: store ring pfn {:#x} port {}, console ring pfn {:#x} port {}",
        places.store_va >> 12,
        places.store_port,
        places.console_va >> 12,
        places.console_port
    );
    Ok(places)
}

/// One PVH selftest check.
type Check = fn(&HvmStartInfo) -> CheckResult;

/// Prints `s` through port 0xe9 (for the time before the hypercall page exists).
fn early_print(s: &str) {
    for b in s.bytes() {
        // SAFETY: port 0xe9 is the hypervisor's debug console; writing it has no other effect.
        unsafe { core::arch::asm!("out 0xe9, al", in("al") b, options(nomem, nostack)) };
    }
}

fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` stops this vCPU; the hypervisor decides what happens next.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Xen's first CPUID leaf, scanning as guests conventionally do (0x40000000..0x40010000 in
/// steps of 0x100).
fn xen_cpuid_base() -> Option<u32> {
    use hypercall_abi::hvm::{
        is_xen_signature, XEN_CPUID_FIRST_LEAF, XEN_CPUID_LEAF_HYPERCALL, XEN_CPUID_SCAN_END,
        XEN_CPUID_SCAN_STEP,
    };
    (XEN_CPUID_FIRST_LEAF..XEN_CPUID_SCAN_END)
        .step_by(XEN_CPUID_SCAN_STEP as usize)
        .find(|&leaf| {
            let r = __cpuid(leaf);
            is_xen_signature(r.ebx, r.ecx, r.edx) && r.eax >= leaf + XEN_CPUID_LEAF_HYPERCALL
        })
}

/// Deliberately triple-faults: an empty IDT, then an exception.
fn triple_fault() -> ! {
    let idt: [u16; 5] = [0; 5];
    // SAFETY: loads an empty IDT and raises #UD: the CPU cannot deliver it, nor the #DF,
    // and shuts down, which the hypervisor sees as a triple fault.
    unsafe { core::arch::asm!("lidt [{}]", "ud2", in(reg) &idt, options(noreturn)) }
}

#[no_mangle]
extern "C" fn pvh_main(start_info: u64) -> ! {
    let Some(base) = xen_cpuid_base() else {
        early_print("pvguest: PVH: no Xen CPUID leaves\n");
        halt_forever()
    };
    let msr = __cpuid(base + hypercall_abi::hvm::XEN_CPUID_LEAF_HYPERCALL).ebx;
    let page = addr_of!(entry::hypercall_page) as u64;
    // SAFETY: the hypercall-page MSR from Xen's leaves; the page is the image's own
    // hypercall page (identity mapped, writable for the hypervisor through its EPT).
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") page as u32, in("edx") (page >> 32) as u32, options(nostack));
    }
    // SAFETY: the hypercall page was just written (or the check below fails).
    if !unsafe { pv::hypercalls().is_filled() } {
        early_print("pvguest: PVH: the hypercall page was not filled\n");
        halt_forever()
    }
    let heap = super::HEAP_SPACE.0.get().cast::<u8>();
    // SAFETY: the heap area is the kernel's own static, handed to the allocator once.
    unsafe { super::HEAP.lock().init(heap, super::HEAP_SIZE) };

    // SAFETY: `start_info` is the hvm_start_info the hypervisor placed in RAM (identity
    // mapped); reading it as plain data.
    let si = unsafe { (start_info as *const HvmStartInfo).read_unaligned() };
    let cmdline = cmdline_bytes(&si);
    println!(
        "pvguest: started as PVH: hvm_start_info {start_info:#x} magic {:#x} memmap entries {} cmdline {:?}",
        si.magic,
        si.memmap_entries,
        core::str::from_utf8(cmdline).unwrap_or("<not utf-8>")
    );
    if cmdline
        .split(|&b| b == b' ')
        .any(|w| w == b"pvh-triple-fault")
    {
        println!("pvguest: PVH: triple-faulting on purpose");
        triple_fault();
    }
    let mut tally = Tally::default();
    let checks: [(&str, Check); 6] = [
        ("pvh_start_info", check_start_info),
        ("pvh_long_mode", check_long_mode),
        ("pvh_xen_version", check_xen_version),
        ("pvh_shared_info", check_shared_info),
        ("pvh_string_io", check_string_io),
        ("pvh_refusals", check_refusals),
    ];
    for (name, check) in checks {
        let result = check(&si);
        println!("{}", tally.record(name, &result));
    }
    println!("{}", tally.summary());
    println!("{}", tally.verdict());
    if !tally.success() {
        pv::shutdown(ShutdownReason::Crash)
    }
    match cmdline::parse_mode(cmdline) {
        Ok(Mode::Pingpong(args)) => {
            if let Err(e) = enable_events() {
                println!("pvguest: PVH: {e}");
                pv::shutdown(ShutdownReason::Crash)
            }
            let ok = super::pair::pingpong(args);
            pv::shutdown(if ok {
                ShutdownReason::Poweroff
            } else {
                ShutdownReason::Crash
            })
        }
        Ok(Mode::Grant(args)) => {
            if let Err(e) = enable_events() {
                println!("pvguest: PVH: {e}");
                pv::shutdown(ShutdownReason::Crash)
            }
            let ok = super::pair::grant_with_pages(&mut PvhPages { used: 0 }, args);
            pv::shutdown(if ok {
                ShutdownReason::Poweroff
            } else {
                ShutdownReason::Crash
            })
        }
        Ok(Mode::XenbusTest(args)) => {
            let places = enable_events().and_then(|()| ring_places());
            let ok = super::xenbus_test::run_on(places, args);
            pv::shutdown(if ok {
                ShutdownReason::Poweroff
            } else {
                ShutdownReason::Crash
            })
        }
        Ok(Mode::Bench) => {
            super::bench::run_pvh(cmdline);
            pv::shutdown(ShutdownReason::Poweroff)
        }
        Ok(Mode::Burn(args)) => {
            super::share::burn(args);
            pv::shutdown(ShutdownReason::Poweroff)
        }
        _ => pv::shutdown(ShutdownReason::Poweroff),
    }
}

fn cmdline_bytes(si: &HvmStartInfo) -> &'static [u8] {
    if si.cmdline_paddr == 0 {
        return &[];
    }
    let p = si.cmdline_paddr as *const u8;
    let mut len = 0;
    // SAFETY: the command line is a NUL-terminated string the hypervisor placed in RAM below
    // 1 GiB (identity mapped), at most 1024 bytes.
    while len < 1024 && unsafe { p.add(len).read() } != 0 {
        len += 1;
    }
    // SAFETY: as above; the bytes stay untouched for the kernel's life.
    unsafe { core::slice::from_raw_parts(p, len) }
}

fn check_start_info(si: &HvmStartInfo) -> CheckResult {
    ensure!(
        si.magic == XEN_HVM_START_MAGIC_VALUE,
        "magic {:#x}",
        si.magic
    );
    ensure!(si.version >= 1, "version {}", si.version);
    ensure!(si.memmap_entries > 0, "no memory map");
    Ok(())
}

fn check_long_mode(_: &HvmStartInfo) -> CheckResult {
    let efer: u64;
    // SAFETY: reading EFER has no side effect; the hypervisor emulates it.
    unsafe {
        let (lo, hi): (u32, u32);
        core::arch::asm!("rdmsr", in("ecx") 0xc000_0080u32, out("eax") lo, out("edx") hi, options(nomem, nostack));
        efer = (u64::from(hi) << 32) | u64::from(lo);
    }
    ensure!(efer & (1 << 10) != 0, "EFER {efer:#x} without LMA");
    Ok(())
}

fn check_xen_version(_: &HvmStartInfo) -> CheckResult {
    let (major, minor) = pv::hypercalls()
        .xen_version()
        .map_err(|e| alloc::format!("{e}"))?;
    ensure!(major >= 3, "version {major}.{minor}");
    Ok(())
}

/// The line `check_string_io` writes with `rep outsb`.
pub const STRING_IO_LINE: &str = "pvguest: PVH: this line went out with rep outsb to port 0xe9";

/// A port no PC device uses: reads give all ones.
const NO_DEVICE_PORT: u16 = 0x3e0;

/// String port I/O, which the hypervisor emulates: a line out to port 0xe9 with `rep outsb`
/// (the boot test looks for it in the console), and `rep insw` from a port without a
/// device, which must fill the buffer with all ones, backwards with RFLAGS.DF set.
fn check_string_io(_: &HvmStartInfo) -> CheckResult {
    let line = alloc::format!("{STRING_IO_LINE}\n");
    // SAFETY: reads `line.len()` bytes of `line` and writes them to the debug port; DF is
    // clear (the ABI's default).
    unsafe {
        core::arch::asm!(
            "rep outsb",
            inout("rsi") line.as_ptr() => _,
            inout("rcx") line.len() => _,
            in("dx") 0xe9u16,
            options(nostack, readonly),
        )
    };
    let mut words = [0u16; 8];
    let last = words.as_mut_ptr().wrapping_add(words.len() - 1);
    let left: usize;
    // SAFETY: writes the 8 words of `words` from the last one down (DF set for the
    // instruction only, cleared again before anything else runs).
    unsafe {
        core::arch::asm!(
            "std",
            "rep insw",
            "cld",
            inout("rdi") last => _,
            inout("rcx") words.len() => left,
            in("dx") NO_DEVICE_PORT,
            options(nostack),
        )
    };
    ensure!(left == 0, "rep insw left rcx = {left}");
    ensure!(
        words.iter().all(|&w| w == 0xffff),
        "rep insw from port {NO_DEVICE_PORT:#x} read {words:x?}"
    );
    Ok(())
}

/// What an HVM guest must be refused, each with the errno the hypervisor gives: a PV-only
/// hypercall, a callback at an exception vector or through a GSI, a non-existent domain's
/// parameter, the shared-info page at a frame beyond the guest's
/// address width or at index 1, a grant-table frame beyond the table's limit, and ballooning
/// (an HVM guest's memory is its EPT).
fn check_refusals(_: &HvmStartInfo) -> CheckResult {
    use hypercall_abi::errno::Errno;
    use hypercall_abi::hvm::{HvmOp, XenHvmParam};
    use hypercall_abi::memory::XenMemoryReservation;
    use hypercall_abi::xen::Hypercall;
    let hc = pv::hypercalls();
    let expect = |what: &str, ret: i64, want: Errno| -> CheckResult {
        ensure!(ret == want.as_ret(), "{what}: {ret}, not -{want:?}");
        Ok(())
    };
    // SAFETY: mmu_update with no requests; an HVM guest is refused before anything is read.
    let ret = unsafe { hc.hypercall4(Hypercall::MmuUpdate, 0, 0, 0, DOMID_SELF.into()) };
    expect("mmu_update", ret, Errno::ENOSYS)?;
    let set_param = |domid: u16, index: HvmParam, value: u64| {
        let p = XenHvmParam {
            domid,
            pad: 0,
            index: index.raw(),
            value,
        };
        // SAFETY: the hypervisor reads one `XenHvmParam`; every call here must be refused,
        // and a refused one changes nothing.
        unsafe {
            hc.hypercall2(
                Hypercall::HvmOp,
                HvmOp::SetParam as u64,
                &p as *const XenHvmParam as u64,
            )
        }
    };
    let vector = |v: u8| HvmCallbackVia::Vector(v).encode();
    expect(
        "callback at vector 14",
        set_param(DOMID_SELF, HvmParam::CallbackIrq, vector(14)),
        Errno::EINVAL,
    )?;
    expect(
        "callback through GSI 5",
        set_param(
            DOMID_SELF,
            HvmParam::CallbackIrq,
            HvmCallbackVia::Gsi(5).encode(),
        ),
        Errno::EINVAL,
    )?;
    expect(
        "a missing domain's callback",
        set_param(0x7000, HvmParam::CallbackIrq, vector(0x40)),
        Errno::ESRCH,
    )?;
    let add = |space: XenMapSpace, idx: u64, gpfn: u64| {
        let mut arg = XenAddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: space as u32,
            idx,
            gpfn,
        };
        // SAFETY: each call names a frame the hypervisor must refuse to place, so nothing of
        // the guest's memory changes.
        unsafe {
            hc.hypercall2(
                Hypercall::MemoryOp,
                MemoryOp::AddToPhysmap as u64,
                &mut arg as *mut XenAddToPhysmap as u64,
            )
        }
    };
    expect(
        "shared info beyond the address width",
        add(XenMapSpace::SharedInfo, 0, 1 << 40),
        Errno::EINVAL,
    )?;
    expect(
        "shared info index 1",
        add(XenMapSpace::SharedInfo, 1, 0x100),
        Errno::EINVAL,
    )?;
    expect(
        "grant-table frame 1000",
        add(XenMapSpace::GrantTable, 1000, 0x100),
        Errno::EINVAL,
    )?;
    let frame = 0x100u64;
    let mut reservation = XenMemoryReservation {
        extent_start: hypercall_abi::GuestHandle::from_ptr(&frame),
        nr_extents: 1,
        extent_order: 0,
        mem_flags: 0,
        domid: DOMID_SELF,
        pad0: [0; 3],
    };
    // SAFETY: refused for an HVM guest before anything is freed.
    let ret = unsafe {
        hc.hypercall2(
            Hypercall::MemoryOp,
            MemoryOp::DecreaseReservation as u64,
            &mut reservation as *mut XenMemoryReservation as u64,
        )
    };
    expect("decrease_reservation", ret, Errno::ENOSYS)
}

fn check_shared_info(_: &HvmStartInfo) -> CheckResult {
    let mut arg = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XenMapSpace::SharedInfo as u32,
        idx: 0,
        gpfn: pv::shared_info() as u64 >> 12,
    };
    // SAFETY: `arg` is a valid add_to_physmap argument naming the image's own
    // shared-info page, which nothing else uses.
    unsafe { pv::hypercalls().memory_op(MemoryOp::AddToPhysmap, &mut arg) }
        .map_err(|e| alloc::format!("add_to_physmap: {e}"))?;
    // The hypervisor starts every vCPU with upcalls masked.
    // SAFETY: the shared-info page is now mapped at `shared_info()`.
    let mask = unsafe { addr_of_mut!((*pv::vcpu0()).evtchn_upcall_mask).read_volatile() };
    ensure!(mask == 1, "vcpu_info[0].evtchn_upcall_mask is {mask}");
    Ok(())
}
