//! The code modules loaded in this process and their unwind tables (`.eh_frame_hdr` and
//! `.eh_frame`), found with `dl_iterate_phdr` and copied out of the process's own memory, so
//! that a stack copied from another thread can be unwound on the watchdog thread.
//!
//! The tables are copied (not borrowed) so that a library unloaded later can never leave the
//! unwinder reading unmapped memory. The copy is made once, at the first stack that needs it,
//! and again only when a library was loaded or unloaded since.

use std::ffi::CStr;
use std::ops::Range;

/// One loaded module's unwind data, ready for the unwinder.
#[derive(Debug, Clone)]
pub(crate) struct ModuleImage {
    /// The file name (`""` for the main executable).
    pub(crate) name: String,
    /// The load bias: actual address minus the address stated in the file.
    pub(crate) bias: u64,
    /// Actual addresses of the module's executable segments (lowest start to highest end).
    pub(crate) code: Range<u64>,
    /// Actual addresses of all its loaded segments (lowest start to highest end): its code,
    /// its data and the pointers its code calls and jumps through.
    pub(crate) mapped: Range<u64>,
    /// Stated addresses and bytes of `.eh_frame_hdr`.
    pub(crate) eh_frame_hdr_svma: Range<u64>,
    pub(crate) eh_frame_hdr: Vec<u8>,
    /// Stated addresses and bytes of `.eh_frame`.
    pub(crate) eh_frame_svma: Range<u64>,
    pub(crate) eh_frame: Vec<u8>,
}

/// How many modules were ever loaded and unloaded in this process (`dlpi_adds`,
/// `dlpi_subs`): when these change, the module list must be read again.
pub(crate) fn generation() -> (u64, u64) {
    let mut gen = (0u64, 0u64);
    // SAFETY: the callback has the signature dl_iterate_phdr expects and only reads the
    // `dl_phdr_info` it is given, for the call's duration; `data` points at `gen`, alive for
    // the whole call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(generation_cb),
            (&mut gen as *mut (u64, u64)).cast::<libc::c_void>(),
        );
    }
    gen
}

unsafe extern "C" fn generation_cb(
    info: *mut libc::dl_phdr_info,
    size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    // The counters exist only in the larger struct of newer C libraries.
    if info.is_null() || size < std::mem::size_of::<libc::dl_phdr_info>() {
        return 1;
    }
    // SAFETY: dl_iterate_phdr passes a valid info for this call; data is the `(u64, u64)`
    // passed by `generation`.
    unsafe {
        let gen = &mut *data.cast::<(u64, u64)>();
        *gen = ((*info).dlpi_adds, (*info).dlpi_subs);
    }
    1
}

/// Every loaded module that has unwind tables.
pub(crate) fn loaded() -> Vec<ModuleImage> {
    let mut out: Vec<ModuleImage> = Vec::new();
    // The tables are copied through /proc/self/mem.
    if !super::remote::open_memory() {
        return out;
    }
    // The loader holds its lock during the walk, so no module is unloaded while it is read.
    for_each_module(|name, bias, phdrs| {
        if let Some(m) = image(name, bias, phdrs) {
            out.push(m);
        }
    });
    out
}

/// Call `f` with each loaded module's name (`""` for the main executable), load bias and
/// program headers, from `dl_iterate_phdr`.
pub(crate) fn for_each_module(mut f: impl FnMut(&str, u64, &[libc::Elf64_Phdr])) {
    let mut f: &mut dyn FnMut(&str, u64, &[libc::Elf64_Phdr]) = &mut f;
    // SAFETY: the callback has the signature dl_iterate_phdr expects and uses the info it is
    // given only for the call's duration; `data` points at `f`, alive for the whole call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(module_cb),
            (&mut f as *mut &mut dyn FnMut(&str, u64, &[libc::Elf64_Phdr])).cast::<libc::c_void>(),
        );
    }
}

unsafe extern "C" fn module_cb(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    if info.is_null() || data.is_null() {
        return 0;
    }
    // SAFETY: dl_iterate_phdr passes a valid info, whose program headers are mapped for the
    // duration of the call; data is the closure passed by `for_each_module`.
    let (info, f) = unsafe {
        (
            &*info,
            &mut *data.cast::<&mut dyn FnMut(&str, u64, &[libc::Elf64_Phdr])>(),
        )
    };
    if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
        return 0;
    }
    // SAFETY: the loader gives `dlpi_phnum` headers at `dlpi_phdr`.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let name = if info.dlpi_name.is_null() {
        std::borrow::Cow::Borrowed("")
    } else {
        // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dlpi_name) }.to_string_lossy()
    };
    f(&name, info.dlpi_addr, phdrs);
    0
}

/// Copy one module's unwind tables out of its mapped segments (`phdrs`: the program headers
/// of a module loaded at `bias`).
fn image(name: &str, bias: u64, phdrs: &[libc::Elf64_Phdr]) -> Option<ModuleImage> {
    let mut code: Option<Range<u64>> = None;
    let mut mapped: Option<Range<u64>> = None;
    let mut hdr: Option<Range<u64>> = None;
    // The lowest start to the highest end of the ranges widened in.
    let widen = |span: &mut Option<Range<u64>>, r: Range<u64>| {
        *span = Some(match span.take() {
            Some(s) => s.start.min(r.start)..s.end.max(r.end),
            None => r,
        });
    };
    for p in phdrs {
        if p.p_type == libc::PT_LOAD {
            let r = p.p_vaddr..p.p_vaddr + p.p_memsz;
            widen(&mut mapped, r.clone());
            if p.p_flags & libc::PF_X != 0 {
                widen(&mut code, r);
            }
        }
        if p.p_type == libc::PT_GNU_EH_FRAME {
            hdr = Some(p.p_vaddr..p.p_vaddr + p.p_memsz);
        }
    }
    let code = code?;
    let mapped = mapped?;
    let hdr = hdr?;
    // The segment that holds a stated address, as the stated range of its file bytes.
    let segment_of = |svma: u64| {
        phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_R != 0)
            .map(|p| p.p_vaddr..p.p_vaddr + p.p_filesz)
            .find(|r| r.contains(&svma))
    };
    let hdr_seg = segment_of(hdr.start)?;
    if hdr.end > hdr_seg.end || hdr.end - hdr.start < 8 {
        return None;
    }
    // Copied through /proc/self/mem, never read in place: a file truncated or rewritten on
    // disk under its mapping would make a plain read fault (SIGBUS); the copy fails instead.
    let hdr_bytes = copy(bias, hdr.clone())?;
    let eh_frame_start = eh_frame_ptr(&hdr_bytes, hdr.start)?;
    let seg = segment_of(eh_frame_start)?;
    let rest = copy(bias, eh_frame_start..seg.end)?;
    let len = eh_frame_len(&rest);
    Some(ModuleImage {
        name: name.to_owned(),
        bias,
        code: code.start.wrapping_add(bias)..code.end.wrapping_add(bias),
        mapped: mapped.start.wrapping_add(bias)..mapped.end.wrapping_add(bias),
        eh_frame_hdr_svma: hdr,
        eh_frame_hdr: hdr_bytes,
        eh_frame_svma: eh_frame_start..eh_frame_start + len as u64,
        eh_frame: rest[..len].to_vec(),
    })
}

/// A copy of the bytes at stated addresses `svma` of a module loaded at `bias`; `None` when
/// they cannot all be read.
fn copy(bias: u64, svma: Range<u64>) -> Option<Vec<u8>> {
    let len = usize::try_from(svma.end.checked_sub(svma.start)?).ok()?;
    let mut out = vec![0u8; len];
    (super::remote::copy_own_memory(svma.start.wrapping_add(bias), &mut out) == len).then_some(out)
}

/// The stated address of `.eh_frame`, from `.eh_frame_hdr` (its `eh_frame_ptr` field) at
/// stated address `hdr_svma`.
fn eh_frame_ptr(hdr: &[u8], hdr_svma: u64) -> Option<u64> {
    const DW_EH_PE_OMIT: u8 = 0xff;
    if hdr.first() != Some(&1) {
        return None;
    }
    let enc = *hdr.get(1)?;
    if enc == DW_EH_PE_OMIT {
        return None;
    }
    let field = &hdr[4..];
    let field_svma = hdr_svma + 4;
    let value: i64 = match enc & 0x0f {
        0x00 | 0x04 | 0x0c => i64::from_le_bytes(field.get(..8)?.try_into().ok()?),
        0x03 => u32::from_le_bytes(field.get(..4)?.try_into().ok()?) as i64,
        0x0b => i32::from_le_bytes(field.get(..4)?.try_into().ok()?) as i64,
        _ => return None,
    };
    let base = match enc & 0x70 {
        0x00 => 0,
        0x10 => field_svma,
        0x30 => hdr_svma,
        _ => return None,
    };
    Some(base.wrapping_add(value as u64))
}

/// The length of the `.eh_frame` section that starts `bytes`: its entries up to and with
/// the zero terminator, or to the end of `bytes`.
fn eh_frame_len(bytes: &[u8]) -> usize {
    let mut at = 0usize;
    while let Some(word) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        if len == 0 {
            return at + 4;
        }
        let (header, body) = if len == u32::MAX {
            match bytes.get(at + 4..at + 12) {
                Some(b) => (12, u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]))),
                None => break,
            }
        } else {
            (4, u64::from(len))
        };
        let Some(next) = (at as u64)
            .checked_add(header)
            .and_then(|n| n.checked_add(body))
            .filter(|n| *n <= bytes.len() as u64)
        else {
            break;
        };
        at = next as usize;
    }
    at.min(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_and_libc_have_unwind_tables() {
        let modules = loaded();
        assert!(modules.len() >= 2, "{modules:?}");
        let main = modules.iter().find(|m| m.name.is_empty()).expect("main");
        let here = this_test_binary_and_libc_have_unwind_tables as *const () as usize as u64;
        assert!(main.code.contains(&here), "{:x?} {here:x}", main.code);
        assert!(main.eh_frame.len() > 1000);
        // The section ends with its zero terminator.
        assert_eq!(main.eh_frame[main.eh_frame.len() - 4..], [0, 0, 0, 0]);
        assert!(modules.iter().any(|m| m.name.contains("libc.so")));
        let (adds, _) = generation();
        assert!(adds >= modules.len() as u64);
    }

    #[test]
    fn eh_frame_lengths_follow_their_entries() {
        let mut b = Vec::new();
        b.extend_from_slice(&8u32.to_le_bytes());
        b.extend_from_slice(&[1; 8]);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&[2; 4]);
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&[9; 16]);
        assert_eq!(eh_frame_len(&b), 24);
        // A length running past the end stops at the last whole entry.
        assert_eq!(eh_frame_len(&b[..14]), 12);
    }

    #[test]
    fn eh_frame_ptr_decodes_pc_relative_and_absolute() {
        let mut h = vec![1u8, 0x1b, 0x03, 0x3b];
        h.extend_from_slice(&(-100i32).to_le_bytes());
        assert_eq!(eh_frame_ptr(&h, 0x1000), Some(0x1004 - 100));
        let mut h = vec![1u8, 0x00, 0x03, 0x3b];
        h.extend_from_slice(&0x5000u64.to_le_bytes());
        assert_eq!(eh_frame_ptr(&h, 0x1000), Some(0x5000));
        assert_eq!(eh_frame_ptr(&[2, 0x1b, 0, 0, 0, 0, 0, 0], 0), None);
    }
}
