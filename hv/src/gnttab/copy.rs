//! `GNTTABOP_copy`: byte copies between a grant of another domain (or of the caller) and a
//! frame of the caller, or between two grants, without mapping anything into a guest.

use hypercall_abi::grant_table::{
    GnttabCopy, GnttabCopyPtr, GrantRef, GrantStatus, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF,
};
use hypercall_abi::xen::DOMID_SELF;
use hypercall_abi::{DomId, PAGE_SIZE};

use super::map::Usage;
use super::{FrameRefs, GrantTables, GuestFrames, PageCopy, Parts, SharedEntries};
use crate::mm::Mfn;

/// One end of a copy, with what it holds while the copy runs.
#[derive(Clone, Copy, Debug)]
enum Buffer {
    /// A grant, pinned for the copy (`GTF_reading`, and `GTF_writing` for the destination).
    Grant {
        granter: DomId,
        gref: GrantRef,
        mfn: Mfn,
        readonly: bool,
    },
    /// A frame of the caller, with a general reference (and a writable type reference for
    /// the destination).
    Frame {
        mfn: Mfn,
        owner: DomId,
        readonly: bool,
    },
}

impl Buffer {
    fn mfn(&self) -> Mfn {
        match *self {
            Buffer::Grant { mfn, .. } | Buffer::Frame { mfn, .. } => mfn,
        }
    }
}

impl GrantTables {
    /// One `GNTTABOP_copy` op for `caller`: copies `op.len` bytes from the source to the
    /// destination, each a grant reference (`GNTCOPY_*_gref`) of `domid` (`DOMID_SELF`
    /// allowed) or a frame of the caller. A grant is pinned only while the copy runs, so its
    /// `GTF_reading`/`GTF_writing` bits are set only meanwhile (unless it is also mapped).
    ///
    /// Statuses, in Xen's order (source first, then destination): a frame end whose `domid`
    /// is not `DOMID_SELF` (`permission_denied`); an unknown or dead domain (`bad_domain`);
    /// for a grant end, the refusals of [`map_grant_ref`](Self::map_grant_ref) (`bad_gntref`,
    /// `general_error`, `bad_page`) except that a sub-page flag is not checked; a frame end
    /// that is not the caller's (`bad_page`); a destination that cannot take the writable
    /// type (`general_error`); then `offset + len` beyond the page at either end
    /// (`bad_copy_arg`).
    pub fn copy<E>(&mut self, env: &mut E, caller: DomId, op: &GnttabCopy) -> GrantStatus
    where
        E: SharedEntries + GuestFrames + FrameRefs + PageCopy,
    {
        match self.try_copy(env, caller, op) {
            Ok(()) => GrantStatus::Okay,
            Err(status) => status,
        }
    }

    /// A batch of copies: each op's `status` is set and a failed op does not stop the
    /// batch, as Xen.
    pub fn copy_batch<E>(&mut self, env: &mut E, caller: DomId, ops: &mut [GnttabCopy])
    where
        E: SharedEntries + GuestFrames + FrameRefs + PageCopy,
    {
        for op in ops {
            op.status = self.copy(env, caller, op).raw();
        }
    }

    fn try_copy<E>(
        &mut self,
        env: &mut E,
        caller: DomId,
        op: &GnttabCopy,
    ) -> Result<(), GrantStatus>
    where
        E: SharedEntries + GuestFrames + FrameRefs + PageCopy,
    {
        let source_gref = op.flags & GNTCOPY_SOURCE_GREF != 0;
        let dest_gref = op.flags & GNTCOPY_DEST_GREF != 0;
        let source_dom = self.copy_domain(caller, &op.source, source_gref)?;
        let dest_dom = self.copy_domain(caller, &op.dest, dest_gref)?;
        let source = self.claim(env, caller, source_dom, &op.source, source_gref, true)?;
        let dest = match self.claim(env, caller, dest_dom, &op.dest, dest_gref, false) {
            Ok(dest) => dest,
            Err(status) => {
                self.release_buffer(env, source);
                return Err(status);
            }
        };
        let len = usize::from(op.len);
        let source_offset = usize::from(op.source.offset);
        let dest_offset = usize::from(op.dest.offset);
        let result = if source_offset + len > PAGE_SIZE || dest_offset + len > PAGE_SIZE {
            Err(GrantStatus::BadCopyArg)
        } else {
            env.copy_bytes(dest.mfn(), dest_offset, source.mfn(), source_offset, len);
            Ok(())
        };
        self.release_buffer(env, dest);
        self.release_buffer(env, source);
        result
    }

    /// The domain one end names (Xen's `gnttab_copy_lock_domain`): only a grant may name
    /// another domain; `DOMID_SELF` is the caller.
    fn copy_domain(
        &self,
        caller: DomId,
        end: &GnttabCopyPtr,
        is_gref: bool,
    ) -> Result<DomId, GrantStatus> {
        if !is_gref && end.domid != DOMID_SELF {
            return Err(GrantStatus::PermissionDenied);
        }
        let domid = if end.domid == DOMID_SELF {
            caller
        } else {
            end.domid
        };
        self.live(domid)
            .map(|_| domid)
            .ok_or(GrantStatus::BadDomain)
    }

    /// Takes what one end needs for the copy (Xen's `gnttab_copy_claim_buf`).
    fn claim<E>(
        &mut self,
        env: &mut E,
        caller: DomId,
        domid: DomId,
        end: &GnttabCopyPtr,
        is_gref: bool,
        readonly: bool,
    ) -> Result<Buffer, GrantStatus>
    where
        E: SharedEntries + GuestFrames + FrameRefs,
    {
        if is_gref {
            let gref = end.gref();
            let mfn = self.pin(
                env,
                caller,
                domid,
                gref,
                Usage {
                    parts: Parts::HOST,
                    readonly,
                    for_map: false,
                },
            )?;
            return Ok(Buffer::Grant {
                granter: domid,
                gref,
                mfn,
                readonly,
            });
        }
        let mfn = env
            .gfn_to_mfn(domid, end.gmfn())
            .filter(|&mfn| env.take_ref(mfn, domid).is_ok())
            .ok_or(GrantStatus::BadPage)?;
        if !readonly && env.take_writable(mfn, domid).is_err() {
            if env.drop_ref(mfn).is_err() {
                self.inconsistent("copy frame reference missing", domid);
            }
            return Err(GrantStatus::GeneralError);
        }
        Ok(Buffer::Frame {
            mfn,
            owner: domid,
            readonly,
        })
    }

    fn release_buffer<E: SharedEntries + FrameRefs>(&mut self, env: &mut E, buffer: Buffer) {
        match buffer {
            Buffer::Grant {
                granter,
                gref,
                readonly,
                ..
            } => self.release_pins(env, granter, gref, Parts::HOST, readonly),
            Buffer::Frame {
                mfn,
                owner,
                readonly,
            } => {
                let typed = if readonly {
                    Ok(())
                } else {
                    env.drop_writable(mfn)
                };
                if typed.and(env.drop_ref(mfn)).is_err() {
                    self.inconsistent("copy frame reference missing", owner);
                }
            }
        }
    }
}
