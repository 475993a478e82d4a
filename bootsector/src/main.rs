//! A boot sector for hv's real-mode HVM start (`type = "hvm"` in a domain config): the code a
//! BIOS would run from 0x7c00, using no BIOS services (hv provides none).
//!
//! Real mode: flat segments at 0 and a stack below 0x7c00; COM1 programmed for 8N1 at divisor
//! 1; `boot sector: real mode, hello from 0x7c00` printed a byte at a time, each after polling
//! the line status register until THR is empty. Then it loads a GDT (flat 32-bit code at 0x08,
//! flat data at 0x10), sets CR0.PE (a CR0 write, which exits to hv) and far-jumps to 32-bit
//! code, which loads the data segments, reads CR0 back and prints
//! `boot sector: 32-bit protected mode, CR0.PE set` (or `... CR0.PE clear` if the write was
//! lost). Then it turns on 32-bit paging (4 KiB pages for the first 4 MiB, a 4 MiB CR4.PSE
//! page over the MMIO hole at 0xf0000000) and loads from the hole, where no device is: hv
//! emulates the load, fetching the instruction through the guest's page tables, and it reads
//! all ones, so the line is `boot sector: 32-bit paging, MMIO load read all ones`. Last it
//! halts with interrupts off (`cli; hlt`), which hv takes as the domain powering off.
//!
//! The linker script (`link.ld`) places the code at 0x7c00 and the 0x55 0xaa signature at
//! byte 510 and writes a flat 512-byte file, not an ELF.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .set COM1, 0x3f8
    .set LSR_THRE, 0x20
    .set PD, 0x1000         /* page directory */
    .set PT, 0x2000         /* page table for 0-4 MiB */
    .set MMIO, 0xf0000000   /* start of the guest's MMIO hole */

    /* The body of print16 and print32: prints the NUL-terminated string at DS:(E)SI on COM1,
       waiting for THRE before each byte, and returns. The same text assembles as 16- and
       32-bit code. Clobbers AX, DX, (E)SI. */
    .macro PRINT
1:  lodsb
    testb %al, %al
    jz 3f
    movb %al, %ah
    movw $COM1 + 5, %dx
2:  inb %dx, %al
    testb $LSR_THRE, %al
    jz 2b
    movw $COM1, %dx
    movb %ah, %al
    outb %al, %dx
    jmp 1b
3:  ret
    .endm

    /* Writes AL to COM1 register OFFSET. */
    .macro UART_OUT offset, value
    movw $COM1 + \offset, %dx
    movb $\value, %al
    outb %al, %dx
    .endm

    .section .text.boot, "ax"
    .code16
    .globl _start
_start:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $0x7c00, %sp
    /* Nothing here depends on CS (calls are relative, data goes through DS = 0). */
    UART_OUT 1, 0x00        /* IER: no interrupts */
    UART_OUT 3, 0x80        /* LCR: DLAB */
    UART_OUT 0, 0x01        /* DLL: divisor 1 (115200 baud) */
    UART_OUT 1, 0x00        /* DLM */
    UART_OUT 3, 0x03        /* LCR: 8 data bits, no parity, 1 stop bit */
    movw $msg_real, %si
    call print16

    lgdtl gdt_ptr
    movl %cr0, %eax
    orb $1, %al
    movl %eax, %cr0
    ljmpl $0x08, $protected_mode

    .code32
protected_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl $0x7c00, %esp
    movl $msg_protected, %esi
    call print32
    movl %cr0, %eax
    movl $msg_pe_set, %esi
    testb $1, %al
    jnz 4f
    movl $msg_pe_clear, %esi
4:  call print32

    /* 32-bit paging: the page directory at PD, one page table at PT identity-mapping the
       first 4 MiB with 4 KiB pages, and a 4 MiB page (CR4.PSE) for the MMIO hole at 0xf0000000. */
    movl $PD, %edi
    xorl %eax, %eax
    movl $2048, %ecx
    rep stosl
    movl $PT + 3, PD
    movl $MMIO + 0x83, PD + (MMIO >> 22) * 4
    movl $PT, %edi
    movl $3, %eax
6:  stosl
    addl $0x1000, %eax
    cmpl $0x400003, %eax
    jne 6b
    movl $PD, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x10, %eax
    movl %eax, %cr4
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    /* A load from the MMIO hole, which has no device: hv decodes this instruction, fetched
       through these page tables, and completes it with all ones. */
    movl $MMIO, %ebx
    movl (%ebx), %ebx
    movl $msg_paging, %esi
    call print32
    movl $msg_all_ones, %esi
    cmpl $0xffffffff, %ebx
    je 7f
    movl $msg_not_all_ones, %esi
7:  call print32
    cli
8:  hlt
    jmp 8b

print32:
    PRINT
    .code16
print16:
    PRINT

    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: code, base 0, limit 4 GiB, 32-bit */
    .quad 0x00cf92000000ffff    /* 0x10: data, base 0, limit 4 GiB */
gdt_ptr:
    .word gdt_ptr - gdt - 1
    .long gdt

msg_real:
    .asciz "boot sector: real mode, hello from 0x7c00\r\n"
msg_protected:
    .asciz "boot sector: 32-bit protected mode, CR0.PE "
msg_pe_set:
    .asciz "set\r\n"
msg_pe_clear:
    .asciz "clear\r\n"
msg_paging:
    .asciz "boot sector: 32-bit paging, MMIO load read "
msg_all_ones:
    .asciz "all ones\r\n"
msg_not_all_ones:
    .asciz "not all ones\r\n"
    "#,
    options(att_syntax)
);

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// On the host there is nothing to run: the image is a boot sector for hv (`cargo xtask`).
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("bootsector is a boot sector image: boot it under hv as a type = \"hvm\" domain");
    std::process::exit(2);
}
