//! Unwinding a copied stack with DWARF call-frame information (`.eh_frame`), on the
//! watchdog's thread: the thread the stack belongs to is never involved. Frame pointers are
//! not needed.
//!
//! The unwinder is `framehop`, fed with the unwind tables of every module loaded in the
//! process (copied once, refreshed when a library is loaded or unloaded).

use std::ops::Range;

use std::sync::Arc;

use framehop::{
    CacheNative, ExplicitModuleSectionInfo, MayAllocateDuringUnwind, Module, UnwindRegsNative,
    Unwinder, UnwinderNative,
};

use crate::signal::{modules, remote};

/// Unwind-table bytes, shared by the unwinder and the function-start lookups.
type Bytes = Arc<[u8]>;

/// What the walker keeps of one module besides the unwinder's copy: where its code is, and
/// its tables for finding the function that holds an address.
#[derive(Debug)]
struct Tables {
    code: Range<u64>,
    mapped: Range<u64>,
    bias: u64,
    hdr_svma: u64,
    hdr: Bytes,
    eh_frame_svma: u64,
    eh_frame: Bytes,
}

/// The registers a walk starts from.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Regs {
    /// The instruction the thread stopped at.
    pub(crate) pc: u64,
    /// The stack pointer; the copied stack starts here.
    pub(crate) sp: u64,
    /// The frame pointer (rbp, x29), when known: `/proc`'s syscall file does not give it.
    pub(crate) fp: Option<u64>,
    /// The link register (aarch64), when known.
    pub(crate) lr: Option<u64>,
}

/// At most this many stack slots followed by a return address are looked at when a walk
/// needed the frame pointer and did not have it.
const MAX_FP_GUESSES: usize = 64;

/// At most this many bytes of a function's code are read to find a jump that ends it by
/// going to another function (a tail call).
const MAX_TAIL_SCAN: usize = 16 << 10;

/// At most this many functions' code is read per search for a frame pointer (results are
/// kept: see [`StackWalker::jumps`]).
const MAX_TAIL_READS: usize = 8;

/// At most this many functions' jump targets are kept.
const MAX_JUMPS_KEPT: usize = 4096;

/// A stack walker over this process's modules.
pub(crate) struct StackWalker {
    unwinder: UnwinderNative<Bytes, MayAllocateDuringUnwind>,
    cache: CacheNative<MayAllocateDuringUnwind>,
    code: Vec<Range<u64>>,
    tables: Vec<Tables>,
    generation: Option<(u64, u64)>,
    frames: Vec<u64>,
    /// Functions' jump targets, by the function's first address ([`StackWalker::jumps`]):
    /// the same functions come back sample after sample. Emptied when a module is loaded or
    /// unloaded, or when full.
    jumps: std::collections::HashMap<u64, Arc<[u64]>>,
}

impl std::fmt::Debug for StackWalker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackWalker")
            .field("modules", &self.code.len())
            .field("generation", &self.generation)
            .finish()
    }
}

impl Default for StackWalker {
    fn default() -> Self {
        StackWalker {
            unwinder: UnwinderNative::new(),
            cache: CacheNative::new(),
            code: Vec::new(),
            tables: Vec::new(),
            generation: None,
            frames: Vec::new(),
            jumps: std::collections::HashMap::new(),
        }
    }
}

/// The instruction before a return address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// A call to this address.
    To(u64),
    /// A call through a register or memory operand: its target is not known here.
    Indirect,
    /// Not a call.
    None,
}

impl StackWalker {
    /// Read the module list again if a library was loaded or unloaded since the last time.
    fn refresh(&mut self) {
        let gen = modules::generation();
        if self.generation == Some(gen) {
            return;
        }
        self.generation = Some(gen);
        self.unwinder = UnwinderNative::new();
        self.cache = CacheNative::new();
        self.jumps.clear();
        self.code.clear();
        self.tables.clear();
        for m in modules::loaded() {
            let hdr: Bytes = m.eh_frame_hdr.into();
            let eh_frame: Bytes = m.eh_frame.into();
            self.code.push(m.code.clone());
            self.tables.push(Tables {
                code: m.code.clone(),
                mapped: m.mapped.clone(),
                bias: m.bias,
                hdr_svma: m.eh_frame_hdr_svma.start,
                hdr: hdr.clone(),
                eh_frame_svma: m.eh_frame_svma.start,
                eh_frame: eh_frame.clone(),
            });
            let info = ExplicitModuleSectionInfo {
                base_svma: 0,
                eh_frame_hdr_svma: Some(m.eh_frame_hdr_svma),
                eh_frame_hdr: Some(hdr),
                eh_frame_svma: Some(m.eh_frame_svma),
                eh_frame: Some(eh_frame),
                ..Default::default()
            };
            self.unwinder
                .add_module(Module::new(m.name, m.code, m.bias, info));
        }
    }

    /// The first address of the function that holds code address `addr`, from its unwind
    /// table entry (FDE).
    fn function_start(&self, addr: u64) -> Option<u64> {
        self.function_code(addr).map(|r| r.start)
    }

    /// The code of the function that holds code address `addr`, from its unwind table entry
    /// (FDE).
    fn function_code(&self, addr: u64) -> Option<Range<u64>> {
        use gimli::{BaseAddresses, EhFrame, EhFrameHdr, LittleEndian, UnwindSection};
        let t = self.module_of(addr)?;
        let bases = BaseAddresses::default()
            .set_eh_frame_hdr(t.hdr_svma)
            .set_eh_frame(t.eh_frame_svma);
        let hdr = EhFrameHdr::new(&t.hdr, LittleEndian)
            .parse(&bases, 8)
            .ok()?;
        let table = hdr.table()?;
        let eh_frame = EhFrame::new(&t.eh_frame, LittleEndian);
        let fde = table
            .fde_for_address(
                &eh_frame,
                &bases,
                addr.wrapping_sub(t.bias),
                EhFrame::cie_from_offset,
            )
            .ok()?;
        let start = fde.initial_address().wrapping_add(t.bias);
        Some(start..start.wrapping_add(fde.len()))
    }

    /// Where function `f`'s code jumps to another function: `jmp rel32` (`e9`), `jcc rel32`
    /// (`0f 8x`) and `jmp [rip+disp32]` (`ff 25`, through a pointer of `f`'s own module, read),
    /// the targets that lie in a loaded module's code outside `f`, at most [`MAX_TAIL_SCAN`]
    /// bytes of `f` read. A byte pattern inside another instruction yields a target too;
    /// callers compare targets with one function's first address, which such a pattern would
    /// have to name exactly. `None` when `f` is no function's first address, or `budget` (the
    /// reads left) is spent; known functions cost no read.
    fn jumps(&mut self, f: u64, budget: &mut usize) -> Option<Arc<[u64]>> {
        if let Some(known) = self.jumps.get(&f) {
            return Some(known.clone());
        }
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        let code = self.function_code(f).filter(|r| r.start == f)?;
        let mapped = self.module_of(f)?.mapped.clone();
        let len = (code.end.saturating_sub(code.start) as usize).min(MAX_TAIL_SCAN);
        let mut bytes = vec![0u8; len];
        let len = remote::copy_own_memory(f, &mut bytes);
        let bytes = &bytes[..len];
        // The address after an instruction of `n` bytes at `i`, plus its displacement.
        let dest = |i: usize, n: usize| {
            let d = bytes.get(i + n - 4..i + n)?;
            let d = i32::from_le_bytes([d[0], d[1], d[2], d[3]]) as i64;
            Some(f.wrapping_add((i + n) as u64).wrapping_add(d as u64))
        };
        let mut out: Vec<u64> = Vec::new();
        for i in 0..bytes.len() {
            let to = match (bytes[i], bytes.get(i + 1)) {
                (0xe9, _) => dest(i, 5),
                (0x0f, Some(b)) if b & 0xf0 == 0x80 => dest(i, 6),
                (0xff, Some(0x25)) => dest(i, 6)
                    .filter(|slot| mapped.contains(slot) && mapped.contains(&(slot + 7)))
                    .and_then(|slot| {
                        let mut ptr = [0u8; 8];
                        (remote::copy_own_memory(slot, &mut ptr) == 8)
                            .then(|| u64::from_le_bytes(ptr))
                    }),
                _ => None,
            };
            if let Some(to) = to.filter(|t| !code.contains(t) && self.is_code(*t)) {
                if !out.contains(&to) {
                    out.push(to);
                }
            }
        }
        if self.jumps.len() >= MAX_JUMPS_KEPT {
            self.jumps.clear();
        }
        let out: Arc<[u64]> = out.into();
        self.jumps.insert(f, out.clone());
        Some(out)
    }

    /// Whether function `f` ends by handing its frame to `target`: it jumps there (a tail
    /// call), or to a function that does (two in a row: a wrapper of a wrapper). A return
    /// address after a call to `f` can then be `target`'s.
    fn tail_jumps_to(&mut self, f: u64, target: u64, budget: &mut usize) -> bool {
        let Some(first) = self.jumps(f, budget) else {
            return false;
        };
        if first.contains(&target) {
            return true;
        }
        first.iter().any(|&g| {
            self.jumps(g, budget)
                .is_some_and(|second| second.contains(&target))
        })
    }

    /// What the instruction just before `ret` is: a call to a named function (`call rel32`,
    /// `e8`, or `call [rip+disp32]`, `ff 15`, through a pointer), a call through a register
    /// or memory operand (`ff /2`), or no call at all (then `ret` is no return address).
    fn call_before(&self, ret: u64) -> Call {
        let mut code = [0u8; 6];
        match ret.checked_sub(6) {
            Some(at) if remote::copy_own_memory(at, &mut code) == 6 => {}
            _ => return Call::None,
        }
        let rel = i32::from_le_bytes([code[2], code[3], code[4], code[5]]) as i64;
        if code[1] == 0xe8 {
            return Call::To(ret.wrapping_add(rel as u64));
        }
        if code[0] == 0xff && code[1] == 0x15 {
            let mut ptr = [0u8; 8];
            if remote::copy_own_memory(ret.wrapping_add(rel as u64), &mut ptr) == 8 {
                return Call::To(u64::from_le_bytes(ptr));
            }
            return Call::Indirect;
        }
        // ff /2 with a register (mod 11: ff d0+r, 2 bytes, after an optional REX prefix),
        // [reg+disp8] (mod 01: 3 bytes, 4 with a SIB byte), [reg+disp32] (mod 10: 6 bytes).
        let modrm_call = |b: u8, md: u8| b >> 6 == md && (b >> 3) & 7 == 2;
        let indirect = (code[4] == 0xff && modrm_call(code[5], 0b11))
            || (code[3] == 0xff && modrm_call(code[4], 0b01) && code[4] & 7 != 4)
            || (code[2] == 0xff && modrm_call(code[3], 0b01) && code[3] & 7 == 4)
            || (code[0] == 0xff && modrm_call(code[1], 0b10) && code[1] & 7 != 4)
            || (code[4] == 0xff && modrm_call(code[5], 0b00) && !matches!(code[5] & 7, 4 | 5));
        if indirect {
            Call::Indirect
        } else {
            Call::None
        }
    }

    /// The loaded module whose code holds `addr`.
    fn module_of(&self, addr: u64) -> Option<&Tables> {
        self.tables.iter().find(|t| t.code.contains(&addr))
    }

    /// Whether `addr` lies in a loaded module's code.
    fn is_code(&self, addr: u64) -> bool {
        in_code(&self.code, addr)
    }

    /// Walk the stack copied from `regs.sp` into `stack`: the addresses, innermost (the
    /// stopped instruction) first, then return addresses, at most `max` of them, into `out`.
    pub(crate) fn walk(&mut self, regs: Regs, stack: &[u8], max: usize, out: &mut Vec<usize>) {
        self.refresh();
        out.clear();
        self.walk_once(regs, stack, max);
        if regs.fp.is_none() && cfg!(target_arch = "x86_64") {
            if let Some(fp) = self.find_frame_pointer(regs, stack) {
                self.walk_once(
                    Regs {
                        fp: Some(fp),
                        ..regs
                    },
                    stack,
                    max,
                );
            }
        }
        out.extend(self.frames.iter().map(|a| *a as usize));
    }

    /// The frame pointer a walk from `regs` needs, found on the stack.
    ///
    /// The system-call file gives sp and pc, not rbp. A frame whose caller-frame address is
    /// computed from rbp (code built with frame pointers, as the standard library is) ends the
    /// walk there as if the stack ended. That frame's rbp points at the slot where it saved
    /// its caller's rbp, followed by its return address. Above the last frame found, the
    /// first slot followed by a return address whose call instruction called that very
    /// frame's function (or a function that jumps to it as it ends, directly or through one
    /// more: a tail call, which leaves no frame of its own) is taken. Stale return addresses
    /// (of calls that already returned) rarely pass; a function that both calls this one
    /// through a pointer and jumps to it elsewhere could be taken for its caller's caller,
    /// and its frame would be missing. When no slot passes, the walk stays as it was,
    /// shorter. At most [`MAX_TAIL_READS`] functions' code is read (their jumps are kept).
    fn find_frame_pointer(&mut self, regs: Regs, stack: &[u8]) -> Option<u64> {
        let (&last, n) = (self.frames.last()?, self.frames.len());
        // The last frame's function: its address is a return address unless it is the first.
        let lookup = if n == 1 { last } else { last.wrapping_sub(1) };
        let start = self.function_start(lookup)?;
        let words = stack.len() / 8;
        let word = |i: usize| {
            stack
                .get(i * 8..i * 8 + 8)
                .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
        };
        // Past the slot that holds the last frame's return address.
        let from = if n == 1 {
            0
        } else {
            (0..words).find(|i| word(*i) == last).map_or(0, |i| i + 1)
        };
        let mut tried = 0;
        let mut indirect = None;
        let mut budget = MAX_TAIL_READS;
        for i in from..words.saturating_sub(1) {
            let ret = word(i + 1);
            if !self.is_code(ret) {
                continue;
            }
            tried += 1;
            if tried > MAX_FP_GUESSES {
                break;
            }
            // The first slot whose return address follows a call that went to this frame's
            // function, or to one that jumped to it; failing that, the first after a call
            // through a pointer that could have. A call to another function, or no call at
            // all, is a stale value.
            match self.call_before(ret) {
                Call::To(target)
                    if target == start || self.tail_jumps_to(target, start, &mut budget) =>
                {
                    return Some(regs.sp + (i as u64) * 8)
                }
                Call::Indirect if indirect.is_none() => indirect = Some(regs.sp + (i as u64) * 8),
                Call::To(_) | Call::Indirect | Call::None => {}
            }
        }
        if indirect.is_some() {
            return indirect;
        }
        None
    }

    /// One walk from `regs` into `self.frames`, ending at the stack's end, at an address
    /// outside every module's code, or at `max` frames.
    fn walk_once(&mut self, regs: Regs, stack: &[u8], max: usize) {
        self.frames.clear();
        let base = regs.sp;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(base).ok_or(())? as usize;
            let b = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
            Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
        };
        let start = native_regs(regs);
        let mut iter = self
            .unwinder
            .iter_frames(regs.pc, start, &mut self.cache, &mut read_stack);
        while self.frames.len() < max {
            match iter.next() {
                // A return address outside every module's code is not a frame: the walk
                // went wrong (a guessed frame pointer, or a stack cut short).
                Ok(Some(f)) if self.frames.is_empty() || in_code(&self.code, f.address()) => {
                    self.frames.push(f.address())
                }
                Ok(Some(_)) | Ok(None) | Err(_) => break,
            }
        }
    }
}

fn in_code(code: &[Range<u64>], addr: u64) -> bool {
    code.iter().any(|r| r.contains(&addr))
}

#[cfg(target_arch = "x86_64")]
fn native_regs(r: Regs) -> UnwindRegsNative {
    UnwindRegsNative::new(r.pc, r.sp, r.fp.unwrap_or(0))
}

#[cfg(target_arch = "aarch64")]
fn native_regs(r: Regs) -> UnwindRegsNative {
    UnwindRegsNative::new(r.lr.unwrap_or(0), r.sp, r.fp.unwrap_or(0))
}
