//! `xen_version`: hv reports itself as Xen 4.17, the ABI it implements.

use super::{Ctx, HcResult};
use crate::mm::guest_access::{field, read_obj, write_obj};
use crate::pv::emulate::XEN_VERSION;
use hypercall_abi::elfnote::{XenFeature, XENFEAT_NR_SUBMAPS};
use hypercall_abi::errno::Errno;
use hypercall_abi::xen::{
    XenCapabilitiesInfo, XenChangesetInfo, XenCompileInfo, XenExtraversion, XenFeatureInfo,
    XenPlatformParameters, XenVersionCmd, HYPERVISOR_VIRT_START, XEN_CAPABILITIES_INFO_LEN,
    XEN_CHANGESET_INFO_LEN, XEN_EXTRAVERSION_LEN,
};

/// `XENVER_extraversion`.
const EXTRAVERSION: &[u8] = b"-hv";
/// `XENVER_capabilities`: 64-bit PV guests only, for now.
const CAPABILITIES: &[u8] = b"xen-3.0-x86_64";
/// `XENVER_changeset`.
const CHANGESET: &[u8] = b"hv";

/// The `XENFEAT_*` bits of submap 0 a PV guest gets: only what hv implements.
pub fn features_submap0(privileged: bool) -> u32 {
    let mut bits = (1 << XenFeature::PaePgdirAbove4gb as u32)
        | (1 << XenFeature::MmuPtUpdatePreserveAd as u32);
    if privileged {
        bits |= 1 << XenFeature::Dom0 as u32;
    }
    bits
}

fn padded<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N - 1);
    out[..n].copy_from_slice(&s[..n]);
    out
}

pub(super) fn xen_version(ctx: &mut Ctx<'_>, cmd: u64, arg: u64) -> HcResult {
    let Ok(cmd) = XenVersionCmd::try_from(cmd) else {
        return Err(Errno::ENOSYS);
    };
    let privileged = ctx.dom.privileged;
    let mem = &mut *ctx.mem;
    match cmd {
        XenVersionCmd::Version => Ok(i64::from((XEN_VERSION.0 << 16) | XEN_VERSION.1)),
        XenVersionCmd::Extraversion => {
            let v: XenExtraversion = padded::<XEN_EXTRAVERSION_LEN>(EXTRAVERSION);
            write_obj(mem, arg, &v)?;
            Ok(0)
        }
        XenVersionCmd::Capabilities => {
            let v: XenCapabilitiesInfo = padded::<XEN_CAPABILITIES_INFO_LEN>(CAPABILITIES);
            write_obj(mem, arg, &v)?;
            Ok(0)
        }
        XenVersionCmd::Changeset => {
            let v: XenChangesetInfo = padded::<XEN_CHANGESET_INFO_LEN>(CHANGESET);
            write_obj(mem, arg, &v)?;
            Ok(0)
        }
        XenVersionCmd::CompileInfo => {
            let info = XenCompileInfo {
                compiler: padded(b"rustc"),
                compile_by: padded(b"hv"),
                compile_domain: padded(b"hv"),
                compile_date: padded(b"unknown"),
            };
            // Four byte arrays at their ABI offsets.
            write_obj(mem, arg, &info.compiler)?;
            write_obj(mem, field(arg, 64)?, &info.compile_by)?;
            write_obj(mem, field(arg, 80)?, &info.compile_domain)?;
            write_obj(mem, field(arg, 112)?, &info.compile_date)?;
            Ok(0)
        }
        XenVersionCmd::PlatformParameters => {
            let p = XenPlatformParameters {
                virt_start: HYPERVISOR_VIRT_START,
            };
            write_obj(mem, arg, &p.virt_start)?;
            Ok(0)
        }
        XenVersionCmd::GetFeatures => {
            let [idx, _] = read_obj::<[u32; 2]>(mem, arg)?;
            if idx >= XENFEAT_NR_SUBMAPS {
                return Err(Errno::EINVAL);
            }
            let fi = XenFeatureInfo {
                submap_idx: idx,
                submap: features_submap0(privileged),
            };
            write_obj(mem, arg, &[fi.submap_idx, fi.submap])?;
            Ok(0)
        }
        XenVersionCmd::Pagesize => Ok(4096),
        XenVersionCmd::GuestHandle => {
            write_obj(mem, arg, &[0u8; 16])?;
            Ok(0)
        }
        XenVersionCmd::Commandline if !privileged => Err(Errno::EPERM),
        XenVersionCmd::Commandline => {
            write_obj(mem, arg, &[0u8; 1024])?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{World, MEM_BASE};
    use super::super::Outcome;
    use crate::mm::guest_access::{read_obj, write_obj};

    const XEN_VERSION_NR: u64 = 17;

    #[test]
    fn version_and_strings() {
        let mut w = World::new();
        assert_eq!(
            w.call(XEN_VERSION_NR, &[0, 0]),
            (Outcome::Continue, 0x4_0011)
        );
        assert_eq!(w.call(XEN_VERSION_NR, &[1, MEM_BASE]).1, 0);
        let extra: [u8; 16] = read_obj(&mut w.mem, MEM_BASE).unwrap();
        assert_eq!(&extra[..4], b"-hv\0");
        assert_eq!(w.call(XEN_VERSION_NR, &[3, MEM_BASE]).1, 0);
        let caps: [u8; 16] = read_obj(&mut w.mem, MEM_BASE).unwrap();
        assert!(caps.starts_with(b"xen-3.0-x86_64\0"));
        assert_eq!(w.call(XEN_VERSION_NR, &[7, 0]).1, 4096);
    }

    #[test]
    fn bad_pointers_and_commands() {
        let mut w = World::new();
        assert_eq!(w.call(XEN_VERSION_NR, &[1, 0]).1, -14);
        assert_eq!(w.call(XEN_VERSION_NR, &[5, 0xffff_8000_0000_0000]).1, -14);
        assert_eq!(w.call(XEN_VERSION_NR, &[99, MEM_BASE]).1, -38);
        assert_eq!(
            w.call(XEN_VERSION_NR, &[9, MEM_BASE]).1,
            -1,
            "command line is privileged"
        );
    }

    #[test]
    fn features_and_platform_parameters() {
        let mut w = World::new();
        assert_eq!(w.call(XEN_VERSION_NR, &[6, MEM_BASE]).1, 0);
        let [idx, map]: [u32; 2] = read_obj(&mut w.mem, MEM_BASE).unwrap();
        assert_eq!((idx, map), (0, super::features_submap0(false)));
        write_obj(&mut w.mem, MEM_BASE, &[1000u32, 0]).unwrap();
        assert_eq!(
            w.call(XEN_VERSION_NR, &[6, MEM_BASE]).1,
            -22,
            "no such submap"
        );
        assert_eq!(w.call(XEN_VERSION_NR, &[5, MEM_BASE]).1, 0);
        let start: u64 = read_obj(&mut w.mem, MEM_BASE).unwrap();
        assert_eq!(start, hypercall_abi::xen::HYPERVISOR_VIRT_START);
    }
}
