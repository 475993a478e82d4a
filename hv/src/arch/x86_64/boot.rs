//! The image's entry points: the PVH note (QEMU `-kernel`), the multiboot2 header (GRUB),
//! and the 32-bit trampoline both share to reach long mode at hv's final virtual address.
//!
//! Both loaders enter in 32-bit protected mode with paging off and EBX pointing at their boot
//! information. The trampoline zeroes `.bss`, builds boot page tables (the first 4 GiB
//! identity-mapped, and the first 1 GiB again at `HV_VIRT_OFFSET`, all with 2 MiB pages),
//! enables PAE, long mode and NX, and jumps to `hv_start(protocol, info_paddr, magic)` on
//! the boot stack. The final, W^X page tables are built later in Rust.

use super::layout::{BOOT_STACK_SIZE, DIRECTMAP_BASE, HV_PHYS_BASE, HV_VIRT_OFFSET};

/// `protocol` argument of `hv_start`: entered through the PVH note.
pub const PROTOCOL_PVH: u32 = 1;
/// `protocol` argument of `hv_start`: entered by a multiboot2 loader.
pub const PROTOCOL_MULTIBOOT2: u32 = 2;

core::arch::global_asm!(
    r#"
    .section .note.Xen, "a"
    .balign 4
    .long 4                 /* name size: "Xen\0" */
    .long 8                 /* descriptor size */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xe85250d6        /* multiboot2 magic */
    .long 0                 /* architecture: i386 protected mode */
    .long mb2_header_end - mb2_header
    .long -(0xe85250d6 + 0 + (mb2_header_end - mb2_header))
    .balign 8
    .short 3                /* entry address tag */
    .short 0
    .long 12
    .long mb2_start32
    .balign 8
    .short 0                /* end tag */
    .short 0
    .long 8
mb2_header_end:

    /* Link-time check that link.ld and layout.rs agree (see the ASSERTs in link.ld). */
    .globl hv_layout_virt_offset
    .set hv_layout_virt_offset, {virt_offset}
    .globl hv_layout_phys_base
    .set hv_layout_phys_base, {phys_base}

    .section .boot.text, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    mov ${pvh}, %edi
    mov %ebx, %esi
    xor %edx, %edx
    jmp 1f

    .globl mb2_start32
mb2_start32:
    cli
    cld
    mov ${mb2}, %edi
    mov %ebx, %esi
    mov %eax, %edx

1:  mov $(boot_stack_top - {virt_offset}), %esp
    mov %edx, %ebp                  /* keep the loader magic */

    /* Long mode is required: CPUID 0x80000001 EDX bit 29. */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb no_long_mode
    mov $0x80000001, %eax
    cpuid
    bt $29, %edx
    jnc no_long_mode
    mov %edx, %ebx                  /* EDX bit 20: NX */

    /* Zero .bss (loaders are not trusted to do it). The stack is in .bss, so the
       protocol is parked in .boot.data meanwhile. */
    mov %edi, boot_protocol
    mov $(__bss_start - {virt_offset}), %edi
    mov $(__bss_end - {virt_offset}), %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov boot_protocol, %edi

    /* 2048 PD entries: 2 MiB pages covering 0..4 GiB, present + writable + large. */
    mov $boot_pd, %edx
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax
    mov %eax, (%edx,%ecx,8)
    mov %ecx, %eax
    shr $11, %eax
    mov %eax, 4(%edx,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 2b

    /* Low PDPT: four PDs (identity 0..4 GiB). */
    mov $boot_pdpt_low, %edx
    lea (boot_pd + 0x0003), %eax
    mov %eax, 0(%edx)
    add $0x1000, %eax
    mov %eax, 8(%edx)
    add $0x1000, %eax
    mov %eax, 16(%edx)
    add $0x1000, %eax
    mov %eax, 24(%edx)

    /* High PDPT: the first PD (0..1 GiB) at HV_VIRT_OFFSET. */
    mov $boot_pdpt_high, %edx
    lea (boot_pd + 0x0003), %eax
    mov %eax, ((({virt_offset} >> 30) & 511) * 8)(%edx)

    mov $boot_pml4, %edx
    lea (boot_pdpt_low + 0x0003), %eax
    mov %eax, 0(%edx)
    lea (boot_pdpt_high + 0x0003), %eax
    mov %eax, ((({virt_offset} >> 39) & 511) * 8)(%edx)
    lea (boot_pdpt_low + 0x0003), %eax
    mov %eax, ((({directmap} >> 39) & 511) * 8)(%edx)

    mov %cr4, %eax
    or $0x20, %eax                  /* PAE */
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3

    mov $0xc0000080, %ecx           /* EFER */
    rdmsr
    or $0x100, %eax                 /* LME */
    bt $20, %ebx
    jnc 3f
    or $0x800, %eax                 /* NXE */
3:  wrmsr

    mov %cr0, %eax
    or $0x80010001, %eax            /* PG | WP | PE */
    mov %eax, %cr0

    lgdt boot_gdtr
    ljmp $0x08, $start64_low

no_long_mode:
    mov $no_long_mode_msg, %esi
4:  lodsb
    test %al, %al
    jz 5f
    mov $0x3f8, %dx
    out %al, %dx
    jmp 4b
5:  hlt
    jmp 5b

    .code64
start64_low:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    movabs $start64_high, %rax
    jmp *%rax

    .section .boot.data, "aw"
no_long_mode_msg:
    .asciz "hv: this CPU has no long mode\r\n"
    .balign 8
boot_protocol:
    .long 0
    .balign 8
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
boot_gdt_end:
boot_gdtr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .balign 4096
    .globl boot_pml4
boot_pml4:
    .fill 512, 8, 0
boot_pdpt_low:
    .fill 512, 8, 0
boot_pdpt_high:
    .fill 512, 8, 0
boot_pd:
    .fill 2048, 8, 0

    .text
start64_high:
    lea boot_stack_top(%rip), %rsp
    mov %ebp, %edx                  /* loader magic */
    xor %ebp, %ebp
    push $0                         /* terminate frame-pointer chains */
    mov %edi, %edi
    mov %esi, %esi
    call hv_start
    ud2

    .section .bss.boot_stack, "aw", @nobits
    .balign 4096
    .globl boot_stack_bottom
boot_stack_bottom:
    .skip {stack_size}
    .globl boot_stack_top
boot_stack_top:
    "#,
    virt_offset = const HV_VIRT_OFFSET,
    directmap = const DIRECTMAP_BASE,
    phys_base = const HV_PHYS_BASE,
    pvh = const PROTOCOL_PVH,
    mb2 = const PROTOCOL_MULTIBOOT2,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);
