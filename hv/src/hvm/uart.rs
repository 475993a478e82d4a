//! An emulated 16550A UART: COM1 for HVM guests that print without knowing Xen.
//!
//! Registers at `base + 0..=7` (National Semiconductor PC16550D data sheet; the PC's COM1 is
//! base 0x3f8, IRQ 4):
//!
//! | offset | DLAB = 0 read / write | DLAB = 1 |
//! |--------|-----------------------|----------|
//! | 0      | RBR / THR             | DLL      |
//! | 1      | IER                   | DLM      |
//! | 2      | IIR / FCR             |          |
//! | 3      | LCR (bit 7 = DLAB)    |          |
//! | 4      | MCR                   |          |
//! | 5      | LSR                   |          |
//! | 6      | MSR                   |          |
//! | 7      | SCR                   |          |
//!
//! Transmission is instantaneous: a byte written to THR is returned to the caller at once
//! (hv prints it on the domain's console), so LSR always shows THRE and TEMT and a polling
//! guest never waits. Received bytes ([`Uart16550::receive`]) wait in a 16-byte FIFO. What
//! Linux's 8250 probe checks behaves as on a real 16550A: the scratch register holds its
//! value, loopback (MCR bit 4) routes THR to RBR and MCR's outputs to MSR's inputs, and with
//! FIFOs enabled IIR bits 7:6 read 11. The interrupt line's level is [`Uart16550::irq`];
//! wiring it to the guest is the interrupt controller's job. Offsets beyond 7 are not the
//! UART's: they read all ones (an undriven ISA bus) and ignore writes, like an absent port.

/// The PC's COM1 base port.
pub const COM1_BASE: u16 = 0x3f8;
/// Bytes the receive FIFO holds.
pub const RX_FIFO: usize = 16;

/// IER bits.
const IER_RDA: u8 = 1 << 0;
const IER_THRE: u8 = 1 << 1;
const IER_RLS: u8 = 1 << 2;
const IER_MS: u8 = 1 << 3;
/// LCR bit 7: divisor latch access.
const LCR_DLAB: u8 = 1 << 7;
/// MCR bits.
const MCR_DTR: u8 = 1 << 0;
const MCR_RTS: u8 = 1 << 1;
const MCR_OUT1: u8 = 1 << 2;
const MCR_OUT2: u8 = 1 << 3;
const MCR_LOOP: u8 = 1 << 4;
/// LSR bits.
const LSR_DR: u8 = 1 << 0;
const LSR_OE: u8 = 1 << 1;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;
/// MSR bits.
const MSR_DCTS: u8 = 1 << 0;
const MSR_DDSR: u8 = 1 << 1;
const MSR_TERI: u8 = 1 << 2;
const MSR_DDCD: u8 = 1 << 3;
const MSR_CTS: u8 = 1 << 4;
const MSR_DSR: u8 = 1 << 5;
const MSR_RI: u8 = 1 << 6;
const MSR_DCD: u8 = 1 << 7;
/// FCR bits.
const FCR_ENABLE: u8 = 1 << 0;
const FCR_CLEAR_RX: u8 = 1 << 1;
/// IIR values (bits 3:0).
const IIR_NONE: u8 = 0x01;
const IIR_MS: u8 = 0x00;
const IIR_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const IIR_RLS: u8 = 0x06;
/// IIR bits 7:6 when the FIFOs are enabled.
const IIR_FIFO: u8 = 0xc0;

/// One 16550A.
#[derive(Clone, Debug)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo_enabled: bool,
    /// A THR-empty interrupt is pending (set when THR empties, cleared by reading IIR while
    /// it is the reported source, or by writing THR).
    thre_pending: bool,
    /// Overrun since the last LSR read.
    overrun: bool,
    /// Modem-status delta bits since the last MSR read.
    msr_delta: u8,
    rx: [u8; RX_FIFO],
    rx_head: usize,
    rx_len: usize,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    /// The state after reset: 8N1 is left to the guest, divisor 12 (9600 baud), everything
    /// else zero.
    pub const fn new() -> Self {
        Uart16550 {
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            dll: 12,
            dlm: 0,
            fifo_enabled: false,
            thre_pending: false,
            overrun: false,
            msr_delta: 0,
            rx: [0; RX_FIFO],
            rx_head: 0,
            rx_len: 0,
        }
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    /// Queues a byte from the outside world (console input); a full FIFO drops it and flags
    /// an overrun, as the hardware does. Ignored in loopback mode (the line is cut off).
    pub fn receive(&mut self, byte: u8) {
        if !self.loopback() {
            self.push_rx(byte);
        }
    }

    /// How many bytes [`Uart16550::receive`] can take now without an overrun (none in
    /// loopback mode, where the line is cut off).
    pub fn rx_room(&self) -> usize {
        if self.loopback() {
            0
        } else {
            RX_FIFO - self.rx_len
        }
    }

    fn push_rx(&mut self, byte: u8) {
        if self.rx_len == RX_FIFO {
            self.overrun = true;
            return;
        }
        let slot = (self.rx_head + self.rx_len) % RX_FIFO;
        if let Some(s) = self.rx.get_mut(slot) {
            *s = byte;
            self.rx_len += 1;
        }
    }

    fn pop_rx(&mut self) -> u8 {
        if self.rx_len == 0 {
            return 0;
        }
        let b = self.rx.get(self.rx_head).copied().unwrap_or(0);
        self.rx_head = (self.rx_head + 1) % RX_FIFO;
        self.rx_len -= 1;
        b
    }

    /// The modem-status inputs: in loopback, MCR's outputs (DTR->DSR, RTS->CTS, OUT1->RI,
    /// OUT2->DCD); otherwise a connected terminal (DCD, DSR and CTS asserted).
    fn modem_inputs(&self) -> u8 {
        if self.loopback() {
            let m = self.mcr;
            let mut v = 0;
            if m & MCR_RTS != 0 {
                v |= MSR_CTS;
            }
            if m & MCR_DTR != 0 {
                v |= MSR_DSR;
            }
            if m & MCR_OUT1 != 0 {
                v |= MSR_RI;
            }
            if m & MCR_OUT2 != 0 {
                v |= MSR_DCD;
            }
            v
        } else {
            MSR_DCD | MSR_DSR | MSR_CTS
        }
    }

    fn set_mcr(&mut self, value: u8) {
        let before = self.modem_inputs();
        self.mcr = value & 0x1f;
        let after = self.modem_inputs();
        let changed = before ^ after;
        if changed & MSR_CTS != 0 {
            self.msr_delta |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            self.msr_delta |= MSR_DDSR;
        }
        if changed & MSR_DCD != 0 {
            self.msr_delta |= MSR_DDCD;
        }
        // TERI: RI went from on to off.
        if before & MSR_RI != 0 && after & MSR_RI == 0 {
            self.msr_delta |= MSR_TERI;
        }
    }

    fn lsr(&self) -> u8 {
        let mut v = LSR_THRE | LSR_TEMT;
        if self.rx_len != 0 {
            v |= LSR_DR;
        }
        if self.overrun {
            v |= LSR_OE;
        }
        v
    }

    /// The highest-priority pending interrupt's IIR code.
    fn iir_source(&self) -> u8 {
        if self.ier & IER_RLS != 0 && self.overrun {
            IIR_RLS
        } else if self.ier & IER_RDA != 0 && self.rx_len != 0 {
            IIR_RDA
        } else if self.ier & IER_THRE != 0 && self.thre_pending {
            IIR_THRE
        } else if self.ier & IER_MS != 0 && self.msr_delta != 0 {
            IIR_MS
        } else {
            IIR_NONE
        }
    }

    /// Whether the interrupt line is asserted. On a PC the line reaches the interrupt
    /// controller only with MCR.OUT2 set.
    pub fn irq(&self) -> bool {
        self.iir_source() != IIR_NONE && self.mcr & MCR_OUT2 != 0
    }

    /// A guest `in` from `base + offset`.
    pub fn read(&mut self, offset: u16) -> u8 {
        match offset {
            0 if self.dlab() => self.dll,
            0 => self.pop_rx(),
            1 if self.dlab() => self.dlm,
            1 => self.ier,
            2 => {
                let source = self.iir_source();
                if source == IIR_THRE {
                    self.thre_pending = false;
                }
                let fifo = if self.fifo_enabled { IIR_FIFO } else { 0 };
                source | fifo
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let v = self.lsr();
                self.overrun = false;
                v
            }
            6 => {
                let v = self.modem_inputs() | self.msr_delta;
                self.msr_delta = 0;
                v
            }
            7 => self.scr,
            _ => 0xff,
        }
    }

    /// A guest `out` to `base + offset`; returns the byte transmitted, if any.
    pub fn write(&mut self, offset: u16, value: u8) -> Option<u8> {
        match offset {
            0 if self.dlab() => self.dll = value,
            0 => {
                // The byte leaves at once and THR is empty again.
                self.thre_pending = true;
                if self.loopback() {
                    self.push_rx(value);
                    return None;
                }
                return Some(value);
            }
            1 if self.dlab() => self.dlm = value,
            1 => {
                let enabling_thre = value & IER_THRE != 0 && self.ier & IER_THRE == 0;
                self.ier = value & 0x0f;
                // Enabling the THRE interrupt while THR is empty raises it (PC16550D).
                if enabling_thre {
                    self.thre_pending = true;
                }
            }
            2 => {
                self.fifo_enabled = value & FCR_ENABLE != 0;
                if value & FCR_CLEAR_RX != 0 || !self.fifo_enabled {
                    self.rx_head = 0;
                    self.rx_len = 0;
                }
            }
            3 => self.lcr = value,
            4 => self.set_mcr(value),
            7 => self.scr = value,
            // LSR and MSR are read-only here (factory test writes are not modelled).
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a polling guest does: wait for THRE, write the byte.
    fn putc(u: &mut Uart16550, c: u8) -> Option<u8> {
        let mut spins = 0;
        while u.read(5) & LSR_THRE == 0 {
            spins += 1;
            assert!(spins < 10, "THRE never came");
        }
        u.write(0, c)
    }

    #[test]
    fn a_polling_guest_prints() {
        let mut u = Uart16550::new();
        // Typical init: 115200 8N1, FIFOs on, DTR/RTS/OUT2.
        u.write(1, 0);
        u.write(3, 0x80);
        u.write(0, 1);
        u.write(1, 0);
        u.write(3, 0x03);
        u.write(2, 0xc7);
        u.write(4, 0x0b);
        let out: Vec<u8> = b"hello\n".iter().filter_map(|&c| putc(&mut u, c)).collect();
        assert_eq!(out, b"hello\n");
        assert_eq!(u.read(5), LSR_THRE | LSR_TEMT);
        // The divisor latch kept its value and is back behind DLAB.
        u.write(3, 0x83);
        assert_eq!((u.read(0), u.read(1)), (1, 0));
        u.write(3, 0x03);
        assert_eq!(u.read(3), 0x03);
    }

    #[test]
    fn linux_style_probe_sees_a_16550a() {
        let mut u = Uart16550::new();
        // Scratch register test.
        u.write(7, 0xa5);
        assert_eq!(u.read(7), 0xa5);
        u.write(7, 0x5a);
        assert_eq!(u.read(7), 0x5a);
        // IER: only the low four bits stick.
        u.write(1, 0xff);
        assert_eq!(u.read(1), 0x0f);
        u.write(1, 0);
        assert_eq!(u.read(1), 0);
        // FIFO detection: IIR bits 7:6 = 11 with FIFOs on, 00 with them off.
        u.write(2, FCR_ENABLE);
        assert_eq!(u.read(2) >> 6, 3);
        u.write(2, 0);
        assert_eq!(u.read(2) >> 6, 0);
        assert_eq!(u.read(2), IIR_NONE);
        // Loopback: MCR = LOOP | OUT2 | RTS gives MSR inputs DCD | CTS (0x90).
        u.write(4, MCR_LOOP | MCR_OUT2 | MCR_RTS);
        assert_eq!(u.read(6) & 0xf0, 0x90);
        // Loopback data: THR comes back in RBR, nothing goes out.
        assert_eq!(u.write(0, 0x42), None);
        assert_eq!(u.read(5) & LSR_DR, LSR_DR);
        assert_eq!(u.read(0), 0x42);
        assert_eq!(u.read(5) & LSR_DR, 0);
        // Leaving loopback restores a connected line.
        u.write(4, MCR_DTR | MCR_RTS);
        assert_eq!(u.read(6) & 0xf0, MSR_DCD | MSR_DSR | MSR_CTS);
        assert_eq!(u.read(6) & 0x0f, 0);
        assert_eq!(u.read(4), MCR_DTR | MCR_RTS);
    }

    #[test]
    fn modem_status_deltas() {
        let mut u = Uart16550::new();
        u.write(4, MCR_LOOP | MCR_OUT1);
        let _ = u.read(6);
        u.write(4, MCR_LOOP | MCR_DTR);
        // DSR came, RI went away: DDSR and TERI, cleared by the read.
        assert_eq!(u.read(6), MSR_DSR | MSR_DDSR | MSR_TERI);
        assert_eq!(u.read(6), MSR_DSR);
    }

    #[test]
    fn receiving_and_overrun() {
        let mut u = Uart16550::new();
        assert_eq!(u.read(0), 0);
        for b in 0..20u8 {
            u.receive(b);
        }
        assert_eq!(u.read(5), LSR_THRE | LSR_TEMT | LSR_DR | LSR_OE);
        // OE clears on reading LSR; the first 16 bytes are kept in order.
        assert_eq!(u.read(5) & LSR_OE, 0);
        let got: Vec<u8> = (0..16).map(|_| u.read(0)).collect();
        assert_eq!(got, (0..16).collect::<Vec<u8>>());
        assert_eq!(u.read(5) & LSR_DR, 0);
        // FCR can clear the receive FIFO.
        u.receive(1);
        u.write(2, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(u.read(5) & LSR_DR, 0);
    }

    #[test]
    fn room_tells_how_much_can_be_received_without_overrun() {
        let mut u = Uart16550::new();
        assert_eq!(u.rx_room(), RX_FIFO);
        for b in b"hi" {
            u.receive(*b);
        }
        assert_eq!(u.rx_room(), RX_FIFO - 2);
        assert_eq!(u.read(5) & LSR_DR, LSR_DR);
        assert_eq!((u.read(0), u.read(0)), (b'h', b'i'));
        assert_eq!(u.rx_room(), RX_FIFO);
        for _ in 0..RX_FIFO {
            u.receive(b'x');
        }
        assert_eq!(u.rx_room(), 0);
        assert_eq!(u.read(5) & LSR_OE, 0, "filling the FIFO is no overrun");
        u.write(2, FCR_ENABLE | FCR_CLEAR_RX);
        u.write(4, MCR_LOOP);
        assert_eq!(u.rx_room(), 0, "loopback cuts the line off");
        u.receive(b'y');
        assert_eq!(u.read(5) & LSR_DR, 0);
    }

    #[test]
    fn interrupts_follow_ier_and_priority() {
        let mut u = Uart16550::new();
        assert!(!u.irq());
        u.write(4, MCR_OUT2);
        // Enabling THRE interrupts with THR empty raises one; reading IIR clears it.
        u.write(1, IER_THRE);
        assert!(u.irq());
        assert_eq!(u.read(2), IIR_THRE);
        assert!(!u.irq());
        assert_eq!(u.read(2), IIR_NONE);
        // Each transmitted byte empties THR again.
        assert_eq!(u.write(0, b'x'), Some(b'x'));
        assert!(u.irq());
        // Received data outranks THRE.
        u.write(1, IER_THRE | IER_RDA);
        u.receive(b'a');
        assert_eq!(u.read(2), IIR_RDA);
        assert_eq!(u.read(0), b'a');
        assert_eq!(u.read(2), IIR_THRE);
        // Without OUT2 the line stays low.
        u.write(0, b'y');
        u.write(4, 0);
        assert!(!u.irq());
        // Line status (overrun) is the highest priority.
        u.write(1, IER_RLS | IER_RDA);
        for b in 0..17 {
            u.receive(b);
        }
        assert_eq!(u.read(2) & 0x0f, IIR_RLS);
        let _ = u.read(5);
        assert_eq!(u.read(2) & 0x0f, IIR_RDA);
    }

    #[test]
    fn absent_registers_float_high() {
        let mut u = Uart16550::new();
        for off in [8, 9, 0x100, u16::MAX] {
            assert_eq!(u.read(off), 0xff);
            assert_eq!(u.write(off, 0x12), None);
        }
        // LSR and MSR ignore writes.
        u.write(5, 0);
        assert_eq!(u.read(5), LSR_THRE | LSR_TEMT);
    }
}
