//! The boot bundle: one boot module holding every domain hv builds at boot.
//!
//! This module owns the binary format. `xtask` turns a human-written TOML config into a bundle
//! with [`encode`]; hv reads it at boot with [`Bundle::parse`], which allocates nothing and
//! treats the bytes as hostile: every offset, length and field is checked, with overflow-safe
//! arithmetic, and a bad value is an error, never a panic or an out-of-bounds slice.
//!
//! # Layout
//!
//! All integers are little endian; all offsets are in bytes from the start of the bundle.
//!
//! Header, at offset 0 (40 bytes):
//!
//! | Offset | Size | Field                                                              |
//! |--------|------|--------------------------------------------------------------------|
//! | 0x00   | 8    | magic `b"HVBUNDL\x01"`                                             |
//! | 0x08   | 4    | format version, [`VERSION`]                                        |
//! | 0x0c   | 4    | domain count, 1..=[`MAX_DOMAINS`]                                  |
//! | 0x10   | 8    | total length of the bundle, header included                       |
//! | 0x18   | 8    | offset of the domain table, 8-byte aligned, at least 0x28          |
//! | 0x20   | 4    | CRC-32/IEEE of bytes 0x28..total length (everything after header) |
//! | 0x24   | 4    | reserved, must be 0                                                |
//!
//! Domain table: `count` records of 96 bytes each, back to back. The table precedes all blobs:
//! the *data area* is everything from the end of the table to the total length.
//!
//! | Offset | Size | Field                                                                  |
//! |--------|------|------------------------------------------------------------------------|
//! | 0x00   | 8    | name offset                                                            |
//! | 0x08   | 8    | name length, 1..=[`MAX_NAME_LEN`], printable ASCII `0x21..=0x7e`       |
//! | 0x10   | 8    | kernel image offset, 4096-byte aligned (ELF; a boot sector for HVM)    |
//! | 0x18   | 8    | kernel image length, > 0                                               |
//! | 0x20   | 8    | module (ramdisk) offset, 4096-byte aligned; 0 when there is no module  |
//! | 0x28   | 8    | module length; 0 = no module                                           |
//! | 0x30   | 8    | command line offset                                                    |
//! | 0x38   | 8    | command line length, 0..=[`MAX_CMDLINE_LEN`], UTF-8 without NUL        |
//! | 0x40   | 8    | memory in KiB, > 0, a whole number of 4 KiB pages, <= max memory       |
//! | 0x48   | 8    | max memory in KiB, whole pages, <= [`MAX_MEMORY_KIB`]                  |
//! | 0x50   | 4    | vCPUs, 1..=[`MAX_VCPUS`]                                               |
//! | 0x54   | 4    | domain type: 0 = PV, 1 = PVH, 2 = HVM ([`DomainKind`])                 |
//! | 0x58   | 8    | flags: bit 0 = privileged (control domain); other bits must be 0       |
//!
//! Blobs (names, command lines, kernel images, modules) lie in the data area; every range must
//! be inside it. [`encode`] writes the table right after the header, then each domain's name and
//! command line (8-byte aligned), then each kernel and module (4096-byte aligned, so hv can map an
//! image in place when the bundle itself is page aligned, as multiboot2 and QEMU place modules),
//! and pads the total length to a multiple of 8. It never shares one blob between domains.
//!
//! Bytes past the total length (a boot loader's padding) are ignored. A header error rejects the
//! whole bundle; a record error ([`BundleError::Domain`]) names the domain index, so hv can
//! report that domain and still boot the others.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The first eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"HVBUNDL\x01";
/// The format version this module reads and writes.
pub const VERSION: u32 = 1;
/// Most domains one bundle may describe.
pub const MAX_DOMAINS: u32 = 64;
/// Most vCPUs one domain may have.
pub const MAX_VCPUS: u32 = 64;
/// Longest domain name, in bytes.
pub const MAX_NAME_LEN: u64 = 32;
/// Longest command line, in bytes: Xen's `start_info.cmd_line` holds 1024 bytes including the NUL.
pub const MAX_CMDLINE_LEN: u64 = 1023;
/// Largest memory size: 4 PiB, the 52-bit physical address limit of x86_64. It also keeps
/// `kib * 1024` from overflowing a `u64`.
pub const MAX_MEMORY_KIB: u64 = 1 << 42;
/// Alignment of kernel images and modules inside the bundle.
pub const IMAGE_ALIGN: u64 = 4096;

/// Alignment of the domain table and of names and command lines.
const BLOB_ALIGN: u64 = 8;
/// Memory sizes are whole pages of this many KiB.
const PAGE_KIB: u64 = 4;

const HEADER_LEN: usize = 0x28;
const HDR_MAGIC: usize = 0x00;
const HDR_VERSION: usize = 0x08;
const HDR_COUNT: usize = 0x0c;
const HDR_TOTAL_LEN: usize = 0x10;
const HDR_TABLE_OFFSET: usize = 0x18;
const HDR_CHECKSUM: usize = 0x20;
const HDR_RESERVED: usize = 0x24;

const RECORD_LEN: usize = 0x60;
const REC_NAME: usize = 0x00;
const REC_KERNEL: usize = 0x10;
const REC_MODULE: usize = 0x20;
const REC_CMDLINE: usize = 0x30;
const REC_MEMORY: usize = 0x40;
const REC_MAX_MEMORY: usize = 0x48;
const REC_VCPUS: usize = 0x50;
const REC_KIND: usize = 0x54;
const REC_FLAGS: usize = 0x58;

/// Flag bit: the domain is privileged (the control domain).
const FLAG_PRIVILEGED: u64 = 1 << 0;
/// Every flag bit this version defines; a record with any other bit set is rejected.
const KNOWN_FLAGS: u64 = FLAG_PRIVILEGED;

// The layout tables above, checked: each field ends where the next begins.
const _: () = assert!(HDR_RESERVED + 4 == HEADER_LEN && HEADER_LEN.is_multiple_of(8));
const _: () = assert!(REC_FLAGS + 8 == RECORD_LEN && RECORD_LEN.is_multiple_of(8));
// Lengths and offsets convert between `usize` and `u64` with `as`: lossless on these targets.
const _: () = assert!(usize::BITS == 64);

/// How hv runs a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum DomainKind {
    /// Paravirtualised: ring-3 kernel, Xen PV ABI.
    Pv = 0,
    /// PVH: a hardware-virtualised guest started at its Xen PVH entry point.
    Pvh = 1,
    /// HVM: a hardware-virtualised guest started in real mode at 0x7c00; its kernel is a raw
    /// boot sector image (0x55 0xaa at bytes 510-511), not an ELF.
    Hvm = 2,
}

impl TryFrom<u32> for DomainKind {
    type Error = DomainFault;

    fn try_from(raw: u32) -> Result<Self, DomainFault> {
        match raw {
            0 => Ok(Self::Pv),
            1 => Ok(Self::Pvh),
            2 => Ok(Self::Hvm),
            other => Err(DomainFault::UnknownKind(other)),
        }
    }
}

/// The part of a domain record a range refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blob {
    Name,
    Kernel,
    Module,
    Cmdline,
}

impl fmt::Display for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Name => "name",
            Self::Kernel => "kernel",
            Self::Module => "module",
            Self::Cmdline => "command line",
        })
    }
}

/// What is wrong with one domain record (or one [`DomainInput`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainFault {
    NameLength(u64),
    NameCharset,
    OutOfBounds {
        blob: Blob,
        offset: u64,
        len: u64,
    },
    Misaligned {
        blob: Blob,
        offset: u64,
    },
    EmptyKernel,
    /// An encoder input has `Some` module with no bytes, which the format cannot express.
    EmptyModule,
    /// A record has no module (length 0) but a non-zero module offset.
    StrayModuleOffset(u64),
    CmdlineTooLong(u64),
    CmdlineNotUtf8,
    CmdlineNul,
    VcpusOutOfRange(u32),
    NoMemory,
    MemoryAboveMax {
        memory_kib: u64,
        max_memory_kib: u64,
    },
    MemoryTooLarge(u64),
    NotWholePages(u64),
    UnknownKind(u32),
    UnknownFlags(u64),
}

impl fmt::Display for DomainFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NameLength(len) => write!(f, "name length {len} not in 1..={MAX_NAME_LEN}"),
            Self::NameCharset => f.write_str("name is not printable ASCII without spaces"),
            Self::OutOfBounds { blob, offset, len } => {
                write!(
                    f,
                    "{blob} at {offset:#x}, length {len:#x}, lies outside the data area"
                )
            }
            Self::Misaligned { blob, offset } => {
                write!(
                    f,
                    "{blob} offset {offset:#x} is not {IMAGE_ALIGN}-byte aligned"
                )
            }
            Self::EmptyKernel => f.write_str("kernel image is empty"),
            Self::EmptyModule => f.write_str("module is empty"),
            Self::StrayModuleOffset(offset) => {
                write!(f, "module has offset {offset:#x} but length 0")
            }
            Self::CmdlineTooLong(len) => {
                write!(
                    f,
                    "command line is {len} bytes, more than {MAX_CMDLINE_LEN}"
                )
            }
            Self::CmdlineNotUtf8 => f.write_str("command line is not UTF-8"),
            Self::CmdlineNul => f.write_str("command line contains a NUL byte"),
            Self::VcpusOutOfRange(n) => write!(f, "vcpus {n} not in 1..={MAX_VCPUS}"),
            Self::NoMemory => f.write_str("memory is 0"),
            Self::MemoryAboveMax {
                memory_kib,
                max_memory_kib,
            } => write!(
                f,
                "memory {memory_kib} KiB is more than max memory {max_memory_kib} KiB"
            ),
            Self::MemoryTooLarge(kib) => {
                write!(f, "max memory {kib} KiB is more than {MAX_MEMORY_KIB} KiB")
            }
            Self::NotWholePages(kib) => {
                write!(f, "{kib} KiB is not a whole number of {PAGE_KIB} KiB pages")
            }
            Self::UnknownKind(raw) => write!(f, "unknown domain type {raw}"),
            Self::UnknownFlags(bits) => write!(f, "unknown flag bits {bits:#x}"),
        }
    }
}

/// Why a bundle (or one of its domains) was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Fewer bytes than the header, or than the header's total length, say there are.
    Truncated {
        needed: u64,
        available: u64,
    },
    BadMagic,
    UnsupportedVersion(u32),
    ReservedNotZero(u32),
    NoDomains,
    TooManyDomains(u64),
    /// The total length is shorter than the header itself.
    BadTotalLength(u64),
    /// The domain table is misaligned, overlaps the header, or runs past the total length.
    BadTable {
        offset: u64,
        count: u32,
    },
    /// `expected` is the header's value, `found` the CRC of the bytes.
    ChecksumMismatch {
        expected: u32,
        found: u32,
    },
    /// One domain is invalid; the others may still be used.
    Domain {
        index: usize,
        fault: DomainFault,
    },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bundle: ")?;
        match *self {
            Self::Truncated { needed, available } => {
                write!(f, "truncated ({needed} bytes needed, {available} present)")
            }
            Self::BadMagic => f.write_str("bad magic (not a boot bundle)"),
            Self::UnsupportedVersion(v) => {
                write!(f, "unsupported format version {v} (expected {VERSION})")
            }
            Self::ReservedNotZero(v) => write!(f, "reserved header field is {v:#x}, not 0"),
            Self::NoDomains => f.write_str("no domains"),
            Self::TooManyDomains(n) => write!(f, "{n} domains, more than {MAX_DOMAINS}"),
            Self::BadTotalLength(len) => {
                write!(
                    f,
                    "total length {len} is shorter than the {HEADER_LEN}-byte header"
                )
            }
            Self::BadTable { offset, count } => write!(
                f,
                "domain table at {offset:#x} with {count} records is misaligned or out of bounds"
            ),
            Self::ChecksumMismatch { expected, found } => {
                write!(
                    f,
                    "checksum mismatch (expected {expected:#010x}, found {found:#010x})"
                )
            }
            Self::Domain { index, fault } => write!(f, "domain {index}: {fault}"),
        }
    }
}

/// A validated bundle, borrowing the bytes it was parsed from.
#[derive(Clone, Copy, Debug)]
pub struct Bundle<'a> {
    /// The bundle up to its total length.
    bytes: &'a [u8],
    records: &'a [[u8; RECORD_LEN]],
    /// Offset of the data area (the end of the domain table).
    data_start: u64,
}

/// One domain of a bundle, every field validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainSpec<'a> {
    pub name: &'a str,
    /// The kernel image (an ELF, or a boot sector for [`DomainKind::Hvm`]), starting at a
    /// 4096-byte aligned offset of the bundle.
    pub kernel: &'a [u8],
    /// The module (ramdisk) handed to the guest, 4096-byte aligned like the kernel.
    pub module: Option<&'a [u8]>,
    pub cmdline: &'a str,
    pub memory_kib: u64,
    pub max_memory_kib: u64,
    pub vcpus: u32,
    pub kind: DomainKind,
    /// The control domain, with dom0-like privileges.
    pub privileged: bool,
}

impl<'a> Bundle<'a> {
    /// Checks the header, the checksum and the table's bounds. Domain records are checked one
    /// by one as [`Bundle::domains`] yields them.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BundleError> {
        let available = bytes.len() as u64;
        let header = bytes
            .first_chunk::<HEADER_LEN>()
            .ok_or(BundleError::Truncated {
                needed: HEADER_LEN as u64,
                available,
            })?;
        if header.first_chunk::<8>() != Some(&MAGIC) {
            return Err(BundleError::BadMagic);
        }
        let version = read_u32(header, HDR_VERSION);
        if version != VERSION {
            return Err(BundleError::UnsupportedVersion(version));
        }
        let reserved = read_u32(header, HDR_RESERVED);
        if reserved != 0 {
            return Err(BundleError::ReservedNotZero(reserved));
        }
        let count = read_u32(header, HDR_COUNT);
        if count == 0 {
            return Err(BundleError::NoDomains);
        }
        if count > MAX_DOMAINS {
            return Err(BundleError::TooManyDomains(u64::from(count)));
        }

        let total_len = read_u64(header, HDR_TOTAL_LEN);
        let bytes = sub_slice(bytes, 0, total_len).ok_or(BundleError::Truncated {
            needed: total_len,
            available,
        })?;
        let (_, body) = bytes
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(BundleError::BadTotalLength(total_len))?;
        let expected = read_u32(header, HDR_CHECKSUM);
        let found = crc32(body);
        if found != expected {
            return Err(BundleError::ChecksumMismatch { expected, found });
        }

        let table_offset = read_u64(header, HDR_TABLE_OFFSET);
        let bad_table = BundleError::BadTable {
            offset: table_offset,
            count,
        };
        if !table_offset.is_multiple_of(BLOB_ALIGN) || table_offset < HEADER_LEN as u64 {
            return Err(bad_table);
        }
        // count <= MAX_DOMAINS, so the table length cannot overflow.
        let table_len = u64::from(count) * RECORD_LEN as u64;
        let table = sub_slice(bytes, table_offset, table_len).ok_or(bad_table)?;
        let (records, _) = table.as_chunks::<RECORD_LEN>();
        Ok(Self {
            bytes,
            records,
            // In bounds (the table slice exists), so no overflow.
            data_start: table_offset + table_len,
        })
    }

    /// Number of domain records (valid or not).
    pub fn domain_count(&self) -> usize {
        self.records.len()
    }

    /// Each domain in table order, or the reason that one domain is invalid.
    pub fn domains(&self) -> Domains<'a> {
        Domains {
            bundle: *self,
            records: self.records.iter().enumerate(),
        }
    }

    fn domain(&self, record: &[u8; RECORD_LEN]) -> Result<DomainSpec<'a>, DomainFault> {
        let name_len = read_u64(record, REC_NAME + 8);
        if !(1..=MAX_NAME_LEN).contains(&name_len) {
            return Err(DomainFault::NameLength(name_len));
        }
        let name = check_name(self.blob(record, REC_NAME, Blob::Name)?)?;

        let kernel = self.blob(record, REC_KERNEL, Blob::Kernel)?;
        if kernel.is_empty() {
            return Err(DomainFault::EmptyKernel);
        }
        self.check_image_alignment(record, REC_KERNEL, Blob::Kernel)?;

        let module = if read_u64(record, REC_MODULE + 8) == 0 {
            match read_u64(record, REC_MODULE) {
                0 => None,
                offset => return Err(DomainFault::StrayModuleOffset(offset)),
            }
        } else {
            let module = self.blob(record, REC_MODULE, Blob::Module)?;
            self.check_image_alignment(record, REC_MODULE, Blob::Module)?;
            Some(module)
        };

        let cmdline_len = read_u64(record, REC_CMDLINE + 8);
        if cmdline_len > MAX_CMDLINE_LEN {
            return Err(DomainFault::CmdlineTooLong(cmdline_len));
        }
        let cmdline = check_cmdline(self.blob(record, REC_CMDLINE, Blob::Cmdline)?)?;

        let memory_kib = read_u64(record, REC_MEMORY);
        let max_memory_kib = read_u64(record, REC_MAX_MEMORY);
        let vcpus = read_u32(record, REC_VCPUS);
        check_resources(memory_kib, max_memory_kib, vcpus)?;
        let kind = DomainKind::try_from(read_u32(record, REC_KIND))?;
        let flags = read_u64(record, REC_FLAGS);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(DomainFault::UnknownFlags(flags & !KNOWN_FLAGS));
        }
        Ok(DomainSpec {
            name,
            kernel,
            module,
            cmdline,
            memory_kib,
            max_memory_kib,
            vcpus,
            kind,
            privileged: flags & FLAG_PRIVILEGED != 0,
        })
    }

    /// The bytes of the (offset, length) pair at `field`, which must lie in the data area.
    fn blob(
        &self,
        record: &[u8; RECORD_LEN],
        field: usize,
        blob: Blob,
    ) -> Result<&'a [u8], DomainFault> {
        let offset = read_u64(record, field);
        let len = read_u64(record, field + 8);
        if offset < self.data_start {
            return Err(DomainFault::OutOfBounds { blob, offset, len });
        }
        sub_slice(self.bytes, offset, len).ok_or(DomainFault::OutOfBounds { blob, offset, len })
    }

    fn check_image_alignment(
        &self,
        record: &[u8; RECORD_LEN],
        field: usize,
        blob: Blob,
    ) -> Result<(), DomainFault> {
        let offset = read_u64(record, field);
        if offset.is_multiple_of(IMAGE_ALIGN) {
            Ok(())
        } else {
            Err(DomainFault::Misaligned { blob, offset })
        }
    }
}

/// Iterator over a bundle's domains; see [`Bundle::domains`].
#[derive(Clone, Debug)]
pub struct Domains<'a> {
    bundle: Bundle<'a>,
    records: core::iter::Enumerate<core::slice::Iter<'a, [u8; RECORD_LEN]>>,
}

impl<'a> Iterator for Domains<'a> {
    type Item = Result<DomainSpec<'a>, BundleError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (index, record) = self.records.next()?;
        Some(
            self.bundle
                .domain(record)
                .map_err(|fault| BundleError::Domain { index, fault }),
        )
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.records.size_hint()
    }
}

impl ExactSizeIterator for Domains<'_> {}

/// One domain to encode, owning its images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainInput {
    pub name: String,
    pub kernel: Vec<u8>,
    pub module: Option<Vec<u8>>,
    pub cmdline: String,
    pub memory_kib: u64,
    pub max_memory_kib: u64,
    pub vcpus: u32,
    pub kind: DomainKind,
    pub privileged: bool,
}

/// Checks a domain's name, command line and resources by the rules [`Bundle::parse`] applies,
/// so a tool can reject a config before it reads any image.
pub fn validate_settings(
    name: &str,
    cmdline: &str,
    memory_kib: u64,
    max_memory_kib: u64,
    vcpus: u32,
) -> Result<(), DomainFault> {
    let name_len = name.len() as u64;
    if !(1..=MAX_NAME_LEN).contains(&name_len) {
        return Err(DomainFault::NameLength(name_len));
    }
    check_name(name.as_bytes())?;
    let cmdline_len = cmdline.len() as u64;
    if cmdline_len > MAX_CMDLINE_LEN {
        return Err(DomainFault::CmdlineTooLong(cmdline_len));
    }
    check_cmdline(cmdline.as_bytes())?;
    check_resources(memory_kib, max_memory_kib, vcpus)
}

/// Builds a bundle, applying every rule [`Bundle::parse`] checks, so the result always parses.
pub fn encode(domains: &[DomainInput]) -> Result<Vec<u8>, BundleError> {
    if domains.is_empty() {
        return Err(BundleError::NoDomains);
    }
    let count = u32::try_from(domains.len())
        .ok()
        .filter(|&n| n <= MAX_DOMAINS)
        .ok_or(BundleError::TooManyDomains(domains.len() as u64))?;
    for (index, domain) in domains.iter().enumerate() {
        validate_input(domain).map_err(|fault| BundleError::Domain { index, fault })?;
    }

    // The table follows the header; blobs follow the table, appended to `data` in order.
    let data_start = HEADER_LEN + domains.len() * RECORD_LEN;
    let mut data = Vec::new();
    let mut append = |bytes: &[u8], align: u64| -> (u64, u64) {
        let start = (data_start + data.len()) as u64;
        let padded = start.next_multiple_of(align);
        data.resize(data.len() + (padded - start) as usize, 0);
        data.extend_from_slice(bytes);
        (padded, bytes.len() as u64)
    };
    let mut records = Vec::with_capacity(domains.len());
    for domain in domains {
        let mut record = [0u8; RECORD_LEN];
        write_pair(
            &mut record,
            REC_NAME,
            append(domain.name.as_bytes(), BLOB_ALIGN),
        );
        write_pair(
            &mut record,
            REC_CMDLINE,
            append(domain.cmdline.as_bytes(), BLOB_ALIGN),
        );
        write_u64(&mut record, REC_MEMORY, domain.memory_kib);
        write_u64(&mut record, REC_MAX_MEMORY, domain.max_memory_kib);
        write_u32(&mut record, REC_VCPUS, domain.vcpus);
        write_u32(&mut record, REC_KIND, domain.kind as u32);
        let flags = if domain.privileged {
            FLAG_PRIVILEGED
        } else {
            0
        };
        write_u64(&mut record, REC_FLAGS, flags);
        records.push(record);
    }
    for (domain, record) in domains.iter().zip(&mut records) {
        write_pair(record, REC_KERNEL, append(&domain.kernel, IMAGE_ALIGN));
        if let Some(module) = &domain.module {
            write_pair(record, REC_MODULE, append(module, IMAGE_ALIGN));
        }
    }
    let end = (data_start + data.len()) as u64;
    data.resize(
        data.len() + (end.next_multiple_of(BLOB_ALIGN) - end) as usize,
        0,
    );
    let total_len = data_start + data.len();

    let table = records.as_flattened();
    let mut header = [0u8; HEADER_LEN];
    write_bytes(&mut header, HDR_MAGIC, &MAGIC);
    write_u32(&mut header, HDR_VERSION, VERSION);
    write_u32(&mut header, HDR_COUNT, count);
    write_u64(&mut header, HDR_TOTAL_LEN, total_len as u64);
    write_u64(&mut header, HDR_TABLE_OFFSET, HEADER_LEN as u64);
    write_u32(
        &mut header,
        HDR_CHECKSUM,
        Crc32::new().update(table).update(&data).finish(),
    );

    let mut bundle = Vec::with_capacity(total_len);
    bundle.extend_from_slice(&header);
    bundle.extend_from_slice(table);
    bundle.extend_from_slice(&data);
    Ok(bundle)
}

fn validate_input(domain: &DomainInput) -> Result<(), DomainFault> {
    validate_settings(
        &domain.name,
        &domain.cmdline,
        domain.memory_kib,
        domain.max_memory_kib,
        domain.vcpus,
    )?;
    if domain.kernel.is_empty() {
        return Err(DomainFault::EmptyKernel);
    }
    if domain.module.as_ref().is_some_and(Vec::is_empty) {
        return Err(DomainFault::EmptyModule);
    }
    Ok(())
}

/// The name's bytes as a `str`, if they are printable ASCII without spaces.
fn check_name(bytes: &[u8]) -> Result<&str, DomainFault> {
    if !bytes.iter().all(u8::is_ascii_graphic) {
        return Err(DomainFault::NameCharset);
    }
    core::str::from_utf8(bytes).map_err(|_| DomainFault::NameCharset)
}

/// The command line's bytes as a `str`, if they are UTF-8 without NUL (guests read a C string).
fn check_cmdline(bytes: &[u8]) -> Result<&str, DomainFault> {
    let cmdline = core::str::from_utf8(bytes).map_err(|_| DomainFault::CmdlineNotUtf8)?;
    if cmdline.contains('\0') {
        return Err(DomainFault::CmdlineNul);
    }
    Ok(cmdline)
}

fn check_resources(memory_kib: u64, max_memory_kib: u64, vcpus: u32) -> Result<(), DomainFault> {
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(DomainFault::VcpusOutOfRange(vcpus));
    }
    if memory_kib == 0 {
        return Err(DomainFault::NoMemory);
    }
    if memory_kib > max_memory_kib {
        return Err(DomainFault::MemoryAboveMax {
            memory_kib,
            max_memory_kib,
        });
    }
    if max_memory_kib > MAX_MEMORY_KIB {
        return Err(DomainFault::MemoryTooLarge(max_memory_kib));
    }
    for kib in [memory_kib, max_memory_kib] {
        if !kib.is_multiple_of(PAGE_KIB) {
            return Err(DomainFault::NotWholePages(kib));
        }
    }
    Ok(())
}

/// `len` bytes at `offset`, or `None` if the range overflows or runs past the end.
fn sub_slice(bytes: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let end = offset.checked_add(len)?;
    bytes.get(offset as usize..end as usize)
}

// Field access at the constant offsets above. The buffers are fixed-size arrays the offsets fit
// in (see the layout assertions), so these copy byte by byte without indexing and cannot panic.

fn read_le<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.iter_mut()
        .zip(buf.iter().skip(at))
        .for_each(|(o, b)| *o = *b);
    out
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(read_le(buf, at))
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(read_le(buf, at))
}

fn write_bytes(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf.iter_mut()
        .skip(at)
        .zip(bytes)
        .for_each(|(o, b)| *o = *b);
}

fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    write_bytes(buf, at, &value.to_le_bytes());
}

fn write_u64(buf: &mut [u8], at: usize, value: u64) {
    write_bytes(buf, at, &value.to_le_bytes());
}

fn write_pair(buf: &mut [u8], at: usize, (offset, len): (u64, u64)) {
    write_u64(buf, at, offset);
    write_u64(buf, at + 8, len);
}

/// CRC-32/IEEE (reflected, polynomial 0xedb88320), the checksum of zlib, gzip and PNG.
struct Crc32(u32);

/// The CRC of each byte value, computed at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Self {
        Self(!0)
    }

    fn update(mut self, bytes: &[u8]) -> Self {
        for &byte in bytes {
            // A `u8` index into a 256-entry table is always in bounds.
            self.0 = CRC_TABLE[usize::from(self.0 as u8 ^ byte)] ^ (self.0 >> 8);
        }
        self
    }

    fn finish(self) -> u32 {
        !self.0
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    Crc32::new().update(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    fn input(name: &str) -> DomainInput {
        DomainInput {
            name: name.into(),
            kernel: b"\x7fELF kernel image".to_vec(),
            module: None,
            cmdline: "console=hvc0 selftest".into(),
            memory_kib: 32 * 1024,
            max_memory_kib: 64 * 1024,
            vcpus: 2,
            kind: DomainKind::Pv,
            privileged: false,
        }
    }

    /// Three domains: a privileged PV one, a PVH one with a module, a plain PV one.
    fn sample() -> Vec<DomainInput> {
        let dom0 = DomainInput {
            privileged: true,
            ..input("dom0")
        };
        let dom1 = DomainInput {
            kernel: vec![0xab; 5000],
            module: Some(vec![0xcd; 300]),
            cmdline: String::new(),
            kind: DomainKind::Pvh,
            vcpus: MAX_VCPUS,
            ..input("guest-1")
        };
        vec![dom0, dom1, input("x")]
    }

    fn sample_bytes() -> Vec<u8> {
        encode(&sample()).expect("sample encodes")
    }

    fn spec_to_input(spec: &DomainSpec<'_>) -> DomainInput {
        DomainInput {
            name: spec.name.into(),
            kernel: spec.kernel.to_vec(),
            module: spec.module.map(<[u8]>::to_vec),
            cmdline: spec.cmdline.into(),
            memory_kib: spec.memory_kib,
            max_memory_kib: spec.max_memory_kib,
            vcpus: spec.vcpus,
            kind: spec.kind,
            privileged: spec.privileged,
        }
    }

    /// Every domain of `bytes`, or the first error.
    fn decode_all(bytes: &[u8]) -> Result<Vec<DomainInput>, BundleError> {
        let bundle = Bundle::parse(bytes)?;
        bundle
            .domains()
            .map(|d| d.map(|d| spec_to_input(&d)))
            .collect()
    }

    fn set_u32(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn set_u64(bytes: &mut [u8], at: usize, value: u64) {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn get_u64(bytes: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    /// Recomputes the checksum, so a test's edit reaches the checks behind it.
    fn reseal(bytes: &mut [u8]) {
        if bytes.len() >= HEADER_LEN {
            let end = usize::try_from(get_u64(bytes, HDR_TOTAL_LEN))
                .unwrap_or(usize::MAX)
                .clamp(HEADER_LEN, bytes.len());
            let crc = crc32(&bytes[HEADER_LEN..end]);
            set_u32(bytes, HDR_CHECKSUM, crc);
        }
    }

    fn record_at(index: usize) -> usize {
        HEADER_LEN + index * RECORD_LEN
    }

    /// The sample with one edit and a fresh checksum, parsed and its domains collected.
    fn edited(edit: impl FnOnce(&mut Vec<u8>)) -> Result<Vec<DomainInput>, BundleError> {
        let mut bytes = sample_bytes();
        edit(&mut bytes);
        reseal(&mut bytes);
        decode_all(&bytes)
    }

    /// The error for domain 1 after setting a u64 of its record.
    fn domain1_with_u64(field: usize, value: u64) -> Result<Vec<DomainInput>, BundleError> {
        edited(|b| set_u64(b, record_at(1) + field, value))
    }

    fn fault1(fault: DomainFault) -> Result<Vec<DomainInput>, BundleError> {
        Err(BundleError::Domain { index: 1, fault })
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_preserves_every_field() {
        assert_eq!(decode_all(&sample_bytes()), Ok(sample()));
    }

    #[test]
    fn encoding_follows_the_documented_layout() {
        let bytes = sample_bytes();
        let inputs = sample();
        assert_eq!(&bytes[..8], b"HVBUNDL\x01");
        assert_eq!(
            u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
            VERSION
        );
        assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 3);
        assert_eq!(get_u64(&bytes, 0x10), bytes.len() as u64);
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(get_u64(&bytes, 0x18), 0x28);
        assert_eq!(
            u32::from_le_bytes(bytes[0x20..0x24].try_into().unwrap()),
            crc32(&bytes[0x28..])
        );
        let data_start = (0x28 + 3 * 0x60) as u64;
        for (i, input) in inputs.iter().enumerate() {
            let rec = 0x28 + i * 0x60;
            let name_off = get_u64(&bytes, rec);
            assert!(name_off >= data_start && name_off.is_multiple_of(8));
            let name = &bytes[name_off as usize..][..input.name.len()];
            assert_eq!(name, input.name.as_bytes());
            let kernel_off = get_u64(&bytes, rec + 0x10);
            assert_eq!(kernel_off % 4096, 0);
            assert_eq!(get_u64(&bytes, rec + 0x18), input.kernel.len() as u64);
            let module_len = input.module.as_ref().map_or(0, Vec::len) as u64;
            assert_eq!(get_u64(&bytes, rec + 0x28), module_len);
            assert_eq!(get_u64(&bytes, rec + 0x20) % 4096, 0);
            assert_eq!(get_u64(&bytes, rec + 0x40), input.memory_kib);
            assert_eq!(get_u64(&bytes, rec + 0x48), input.max_memory_kib);
            assert_eq!(
                get_u64(&bytes, rec + 0x50),
                u64::from(input.vcpus) | (input.kind as u64) << 32
            );
            assert_eq!(get_u64(&bytes, rec + 0x58), u64::from(input.privileged));
        }
    }

    #[test]
    fn trailing_bytes_past_total_length_are_ignored() {
        let mut bytes = sample_bytes();
        bytes.extend_from_slice(&[0xff; 4096]);
        assert_eq!(decode_all(&bytes), Ok(sample()));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample_bytes();
        for len in 0..bytes.len() {
            assert!(Bundle::parse(&bytes[..len]).is_err(), "length {len} parsed");
        }
    }

    #[test]
    fn header_errors_reject_the_bundle() {
        let len = sample_bytes().len() as u64;
        assert_eq!(
            Bundle::parse(&[0; 10]).err(),
            Some(BundleError::Truncated {
                needed: 40,
                available: 10
            })
        );
        assert_eq!(edited(|b| b[7] = 2), Err(BundleError::BadMagic));
        assert_eq!(
            edited(|b| set_u32(b, HDR_VERSION, 2)),
            Err(BundleError::UnsupportedVersion(2))
        );
        assert_eq!(
            edited(|b| set_u32(b, HDR_RESERVED, 1)),
            Err(BundleError::ReservedNotZero(1))
        );
        assert_eq!(
            edited(|b| set_u32(b, HDR_COUNT, 0)),
            Err(BundleError::NoDomains)
        );
        assert_eq!(
            edited(|b| set_u32(b, HDR_COUNT, u32::MAX)),
            Err(BundleError::TooManyDomains(u64::from(u32::MAX)))
        );
        assert_eq!(
            edited(|b| set_u64(b, HDR_TOTAL_LEN, len + 1)),
            Err(BundleError::Truncated {
                needed: len + 1,
                available: len
            })
        );
        assert_eq!(
            edited(|b| set_u64(b, HDR_TOTAL_LEN, u64::MAX)),
            Err(BundleError::Truncated {
                needed: u64::MAX,
                available: len
            })
        );
        assert_eq!(
            edited(|b| set_u64(b, HDR_TOTAL_LEN, 39)),
            Err(BundleError::BadTotalLength(39))
        );
        for offset in [0x2c, 0x20, 0, len - 0x60, u64::MAX - 7] {
            assert_eq!(
                edited(|b| set_u64(b, HDR_TABLE_OFFSET, offset)),
                Err(BundleError::BadTable { offset, count: 3 }),
                "table offset {offset:#x}"
            );
        }
    }

    #[test]
    fn a_changed_byte_is_a_checksum_mismatch() {
        let mut bytes = sample_bytes();
        let expected = crc32(&bytes[HEADER_LEN..]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let found = crc32(&bytes[HEADER_LEN..]);
        let err = Bundle::parse(&bytes).unwrap_err();
        assert_eq!(err, BundleError::ChecksumMismatch { expected, found });
        assert_eq!(
            err.to_string(),
            format!("bundle: checksum mismatch (expected {expected:#010x}, found {found:#010x})")
        );
    }

    #[test]
    fn a_bad_domain_is_reported_by_index_and_the_others_still_parse() {
        let mut bytes = sample_bytes();
        set_u32(&mut bytes, record_at(1) + REC_VCPUS, 0);
        reseal(&mut bytes);
        let bundle = Bundle::parse(&bytes).unwrap();
        let results: Vec<_> = bundle.domains().collect();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].map(|d| d.name), Ok("dom0"));
        let err = results[1].unwrap_err();
        assert_eq!(err.to_string(), "bundle: domain 1: vcpus 0 not in 1..=64");
        assert_eq!(results[2].map(|d| d.name), Ok("x"));
    }

    #[test]
    fn name_rules_are_enforced() {
        let name_len = REC_NAME + 8;
        assert_eq!(
            domain1_with_u64(name_len, 0),
            fault1(DomainFault::NameLength(0))
        );
        assert_eq!(
            domain1_with_u64(name_len, 33),
            fault1(DomainFault::NameLength(33))
        );
        // "guest-1" is followed by padding zero bytes: a longer length takes in a NUL.
        assert_eq!(
            domain1_with_u64(name_len, 8),
            fault1(DomainFault::NameCharset)
        );
        for bad in [b' ', 0x7f, 0x80, b'\n'] {
            let result = edited(|b| {
                let at = get_u64(b, record_at(1)) as usize;
                b[at + 2] = bad;
            });
            assert_eq!(result, fault1(DomainFault::NameCharset), "byte {bad:#x}");
        }
    }

    #[test]
    fn ranges_must_lie_in_the_data_area() {
        let bytes = sample_bytes();
        let len = bytes.len() as u64;
        let data_start = (HEADER_LEN + 3 * RECORD_LEN) as u64;
        let blobs = [
            (REC_NAME, Blob::Name),
            (REC_CMDLINE, Blob::Cmdline),
            (REC_KERNEL, Blob::Kernel),
            (REC_MODULE, Blob::Module),
        ];
        for (field, blob) in blobs {
            let blob_len = get_u64(&bytes, record_at(1) + field + 8);
            // Inside the header, inside the table, past the end, and wrapping around. The range
            // is checked before the alignment, so unaligned image offsets also report it.
            let offsets = [0, HEADER_LEN as u64, data_start - 8, len - blob_len + 1];
            for offset in offsets.into_iter().chain([u64::MAX - 3, u64::MAX]) {
                assert_eq!(
                    domain1_with_u64(field, offset),
                    fault1(DomainFault::OutOfBounds {
                        blob,
                        offset,
                        len: blob_len
                    }),
                    "{blob} at {offset:#x}"
                );
            }
        }
        for (field, blob) in [(REC_KERNEL, Blob::Kernel), (REC_MODULE, Blob::Module)] {
            let offset = get_u64(&bytes, record_at(1) + field);
            assert_eq!(
                domain1_with_u64(field + 8, u64::MAX),
                fault1(DomainFault::OutOfBounds {
                    blob,
                    offset,
                    len: u64::MAX
                })
            );
        }
    }

    #[test]
    fn images_must_be_page_aligned_and_the_kernel_non_empty() {
        let bytes = sample_bytes();
        for (field, blob) in [(REC_KERNEL, Blob::Kernel), (REC_MODULE, Blob::Module)] {
            let offset = get_u64(&bytes, record_at(1) + field) + 8;
            assert_eq!(
                domain1_with_u64(field, offset),
                fault1(DomainFault::Misaligned { blob, offset })
            );
        }
        assert_eq!(
            domain1_with_u64(REC_KERNEL + 8, 0),
            fault1(DomainFault::EmptyKernel)
        );
        let stray = get_u64(&bytes, record_at(1) + REC_MODULE);
        assert_eq!(
            domain1_with_u64(REC_MODULE + 8, 0),
            fault1(DomainFault::StrayModuleOffset(stray))
        );
        let without_module = edited(|b| {
            set_u64(b, record_at(1) + REC_MODULE, 0);
            set_u64(b, record_at(1) + REC_MODULE + 8, 0);
        });
        assert_eq!(without_module.map(|d| d[1].module.clone()), Ok(None));
    }

    #[test]
    fn command_line_rules_are_enforced() {
        let cmdline_at = |b: &[u8]| get_u64(b, record_at(0) + REC_CMDLINE) as usize;
        let fault0 = |fault| Err(BundleError::Domain { index: 0, fault });
        assert_eq!(
            edited(|b| set_u64(b, record_at(0) + REC_CMDLINE + 8, 1024)),
            fault0(DomainFault::CmdlineTooLong(1024))
        );
        assert_eq!(
            edited(|b| {
                let at = cmdline_at(b);
                b[at] = 0xff;
            }),
            fault0(DomainFault::CmdlineNotUtf8)
        );
        assert_eq!(
            edited(|b| {
                let at = cmdline_at(b);
                b[at + 3] = 0;
            }),
            fault0(DomainFault::CmdlineNul)
        );
    }

    #[test]
    fn resource_rules_are_enforced() {
        let vcpus = |n| edited(|b| set_u32(b, record_at(1) + REC_VCPUS, n));
        assert_eq!(vcpus(0), fault1(DomainFault::VcpusOutOfRange(0)));
        assert_eq!(vcpus(65), fault1(DomainFault::VcpusOutOfRange(65)));
        assert!(vcpus(1).is_ok());
        assert_eq!(
            domain1_with_u64(REC_MEMORY, 0),
            fault1(DomainFault::NoMemory)
        );
        assert_eq!(
            domain1_with_u64(REC_MEMORY, 64 * 1024 + 4),
            fault1(DomainFault::MemoryAboveMax {
                memory_kib: 64 * 1024 + 4,
                max_memory_kib: 64 * 1024
            })
        );
        assert_eq!(
            domain1_with_u64(REC_MAX_MEMORY, MAX_MEMORY_KIB + 4),
            fault1(DomainFault::MemoryTooLarge(MAX_MEMORY_KIB + 4))
        );
        assert!(domain1_with_u64(REC_MAX_MEMORY, MAX_MEMORY_KIB).is_ok());
        assert_eq!(
            domain1_with_u64(REC_MEMORY, 1001),
            fault1(DomainFault::NotWholePages(1001))
        );
        assert_eq!(
            domain1_with_u64(REC_MAX_MEMORY, 64 * 1024 + 2),
            fault1(DomainFault::NotWholePages(64 * 1024 + 2))
        );
    }

    #[test]
    fn kind_and_flags_are_enforced() {
        assert_eq!(
            edited(|b| set_u32(b, record_at(1) + REC_KIND, 3)),
            fault1(DomainFault::UnknownKind(3))
        );
        assert_eq!(
            edited(|b| set_u32(b, record_at(1) + REC_KIND, 2)).map(|d| d[1].kind),
            Ok(DomainKind::Hvm)
        );
        assert_eq!(
            domain1_with_u64(REC_FLAGS, 1 << 5 | 1),
            fault1(DomainFault::UnknownFlags(1 << 5))
        );
        assert_eq!(
            domain1_with_u64(REC_FLAGS, 1).map(|d| d[1].privileged),
            Ok(true)
        );
    }

    #[test]
    fn the_encoder_rejects_what_the_parser_would() {
        let with = |edit: fn(&mut DomainInput)| {
            let mut domains = sample();
            edit(&mut domains[2]);
            encode(&domains)
        };
        let fault2 = |fault| Err(BundleError::Domain { index: 2, fault });
        assert_eq!(encode(&[]), Err(BundleError::NoDomains));
        assert_eq!(
            encode(&vec![input("d"); 65]),
            Err(BundleError::TooManyDomains(65))
        );
        assert!(encode(&vec![input("d"); 64]).is_ok());
        assert_eq!(with(|d| d.name.clear()), fault2(DomainFault::NameLength(0)));
        assert_eq!(
            with(|d| d.name = "n".repeat(33)),
            fault2(DomainFault::NameLength(33))
        );
        assert_eq!(
            with(|d| d.name = "a b".into()),
            fault2(DomainFault::NameCharset)
        );
        assert_eq!(
            with(|d| d.name = "é".into()),
            fault2(DomainFault::NameCharset)
        );
        assert_eq!(
            with(|d| d.cmdline = "c".repeat(1024)),
            fault2(DomainFault::CmdlineTooLong(1024))
        );
        assert!(with(|d| d.cmdline = "c".repeat(1023)).is_ok());
        assert_eq!(
            with(|d| d.cmdline = "a\0b".into()),
            fault2(DomainFault::CmdlineNul)
        );
        assert_eq!(with(|d| d.kernel.clear()), fault2(DomainFault::EmptyKernel));
        assert_eq!(
            with(|d| d.module = Some(Vec::new())),
            fault2(DomainFault::EmptyModule)
        );
        assert_eq!(
            with(|d| d.vcpus = 65),
            fault2(DomainFault::VcpusOutOfRange(65))
        );
        assert_eq!(with(|d| d.memory_kib = 0), fault2(DomainFault::NoMemory));
        assert_eq!(
            with(|d| d.memory_kib = d.max_memory_kib + 4),
            fault2(DomainFault::MemoryAboveMax {
                memory_kib: 64 * 1024 + 4,
                max_memory_kib: 64 * 1024
            })
        );
        assert_eq!(
            with(|d| d.max_memory_kib = u64::MAX),
            fault2(DomainFault::MemoryTooLarge(u64::MAX))
        );
        assert_eq!(
            with(|d| d.memory_kib = 6),
            fault2(DomainFault::NotWholePages(6))
        );
    }

    #[test]
    fn errors_display_as_one_line() {
        let errors = [
            BundleError::BadMagic,
            BundleError::Truncated {
                needed: 100,
                available: 3,
            },
            BundleError::Domain {
                index: 4,
                fault: DomainFault::OutOfBounds {
                    blob: Blob::Kernel,
                    offset: 0x1000,
                    len: 0x20,
                },
            },
        ];
        let lines: Vec<_> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "bundle: bad magic (not a boot bundle)",
                "bundle: truncated (100 bytes needed, 3 present)",
                "bundle: domain 4: kernel at 0x1000, length 0x20, lies outside the data area",
            ]
        );
    }

    fn arb_input() -> impl Strategy<Value = DomainInput> {
        (
            "[!-~]{1,32}",
            prop::collection::vec(any::<u8>(), 1..3000),
            prop::option::of(prop::collection::vec(any::<u8>(), 1..2000)),
            // At most 255 chars of at most 4 bytes: within MAX_CMDLINE_LEN.
            "[^\\x00]{0,255}",
            1..=MAX_MEMORY_KIB / PAGE_KIB / 2,
            0..=MAX_MEMORY_KIB / PAGE_KIB / 2,
            1..=MAX_VCPUS,
            prop_oneof![
                Just(DomainKind::Pv),
                Just(DomainKind::Pvh),
                Just(DomainKind::Hvm)
            ],
            any::<bool>(),
        )
            .prop_map(
                |(name, kernel, module, cmdline, pages, extra, vcpus, kind, privileged)| {
                    DomainInput {
                        name,
                        kernel,
                        module,
                        cmdline,
                        memory_kib: pages * PAGE_KIB,
                        max_memory_kib: (pages + extra) * PAGE_KIB,
                        vcpus,
                        kind,
                        privileged,
                    }
                },
            )
    }

    #[derive(Clone, Debug)]
    enum Mutation {
        FlipBit(prop::sample::Index, u8),
        SetByte(prop::sample::Index, u8),
        /// Sets the 8-aligned word at `index` of the header and table.
        SetWord(usize, u64),
        Truncate(prop::sample::Index),
        Extend(Vec<u8>),
    }

    fn arb_mutation() -> impl Strategy<Value = Mutation> {
        let word = prop_oneof![
            Just(0u64),
            Just(u64::MAX),
            Just(u64::MAX - 7),
            Just(1 << 63),
            0..0x4000u64,
            any::<u64>(),
        ];
        // Truncation almost always ends in a header error, so it is drawn less often than the
        // edits that reach the domain records.
        prop_oneof![
            3 => (any::<prop::sample::Index>(), 0..8u8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
            3 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
            6 => (0..(HEADER_LEN + 4 * RECORD_LEN) / 8, word).prop_map(|(i, v)| Mutation::SetWord(i, v)),
            1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
            1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
        match mutation {
            Mutation::FlipBit(i, bit) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] ^= 1 << bit;
            }
            Mutation::SetByte(i, value) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = *value;
            }
            Mutation::SetWord(word, value) if word * 8 + 8 <= bytes.len() => {
                set_u64(bytes, word * 8, *value);
            }
            Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Mutation::Extend(tail) => bytes.extend_from_slice(tail),
            _ => {}
        }
    }

    /// Parses and walks every domain; whatever comes out must respect the documented rules.
    fn check_parse_is_total(bytes: &[u8]) {
        let Ok(bundle) = Bundle::parse(bytes) else {
            return;
        };
        assert!((1..=MAX_DOMAINS as usize).contains(&bundle.domain_count()));
        for spec in bundle.domains().flatten() {
            assert!((1..=MAX_NAME_LEN as usize).contains(&spec.name.len()));
            assert!(!spec.kernel.is_empty());
            assert!(spec.module.is_none_or(|m| !m.is_empty()));
            assert!(spec.cmdline.len() as u64 <= MAX_CMDLINE_LEN);
            assert!((1..=MAX_VCPUS).contains(&spec.vcpus));
            assert!(spec.memory_kib > 0 && spec.memory_kib <= spec.max_memory_kib);
            assert!(spec.max_memory_kib <= MAX_MEMORY_KIB);
        }
    }

    proptest! {
        // Cheap cases; more of them reach more of the record checks.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn random_valid_inputs_round_trip(
            domains in prop::collection::vec(arb_input(), 1..5),
        ) {
            let bytes = encode(&domains).unwrap();
            prop_assert_eq!(decode_all(&bytes), Ok(domains));
        }

        #[test]
        fn mutated_bundles_never_panic(
            domains in prop::collection::vec(arb_input(), 1..4),
            mutations in prop::collection::vec(arb_mutation(), 1..4),
            resealed in any::<bool>(),
        ) {
            let mut bytes = encode(&domains).unwrap();
            for mutation in &mutations {
                apply(&mut bytes, mutation);
            }
            if resealed {
                reseal(&mut bytes);
            }
            check_parse_is_total(&bytes);
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            check_parse_is_total(&bytes);
        }

        #[test]
        fn random_bytes_behind_a_valid_header_start_never_panic(
            count in 0..=MAX_DOMAINS + 1,
            table_offset in prop_oneof![Just(HEADER_LEN as u64), any::<u64>()],
            body in prop::collection::vec(any::<u8>(), 0..8192),
        ) {
            let mut bytes = vec![0u8; HEADER_LEN];
            bytes[..8].copy_from_slice(&MAGIC);
            set_u32(&mut bytes, HDR_VERSION, VERSION);
            set_u32(&mut bytes, HDR_COUNT, count);
            set_u64(&mut bytes, HDR_TOTAL_LEN, (HEADER_LEN + body.len()) as u64);
            set_u64(&mut bytes, HDR_TABLE_OFFSET, table_offset);
            bytes.extend_from_slice(&body);
            reseal(&mut bytes);
            check_parse_is_total(&bytes);
        }
    }
}
