//! Unwinding a copied stack with DWARF call-frame information (`.eh_frame`), on the
//! watchdog's thread: the thread the stack belongs to is never involved. Frame pointers are
//! not needed.
//!
//! The unwinder is `framehop`, fed with the unwind tables of every module loaded in the
//! process (copied once, refreshed when a library is loaded or unloaded).

use std::ops::Range;

use framehop::{
    CacheNative, ExplicitModuleSectionInfo, MayAllocateDuringUnwind, Module, UnwindRegsNative,
    Unwinder, UnwinderNative,
};

use crate::signal::modules;

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

/// At most this many frame-pointer guesses are tried for a stack whose walk needed the
/// frame pointer and did not have it.
const MAX_FP_GUESSES: usize = 24;

/// A stack walker over this process's modules.
pub(crate) struct StackWalker {
    unwinder: UnwinderNative<Vec<u8>, MayAllocateDuringUnwind>,
    cache: CacheNative<MayAllocateDuringUnwind>,
    code: Vec<Range<u64>>,
    generation: Option<(u64, u64)>,
    frames: Vec<u64>,
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
            generation: None,
            frames: Vec::new(),
        }
    }
}

/// How one walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Walk {
    frames: usize,
    /// The walk reached the stack's outermost frame (the thread's start), not an error.
    complete: bool,
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
        self.code.clear();
        for m in modules::loaded() {
            self.code.push(m.code.clone());
            let info = ExplicitModuleSectionInfo {
                base_svma: 0,
                eh_frame_hdr_svma: Some(m.eh_frame_hdr_svma),
                eh_frame_hdr: Some(m.eh_frame_hdr),
                eh_frame_svma: Some(m.eh_frame_svma),
                eh_frame: Some(m.eh_frame),
                ..Default::default()
            };
            self.unwinder
                .add_module(Module::new(m.name, m.code, m.bias, info));
        }
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
        let first = self.walk_once(regs, stack, max);
        let mut best = (first, regs.fp);
        let mut guessed = false;
        if regs.fp.is_none() && cfg!(target_arch = "x86_64") {
            // The system-call file gives sp and pc, not the frame pointer. A frame whose
            // caller-frame address is computed from rbp (code built with frame pointers, as
            // the standard library is) ends the walk there, as if the stack ended: try the
            // stack slots above the last frame found that could be that frame's saved rbp
            // (followed by a return address into code), and keep the guess that walks
            // furthest through code to a proper end.
            let words = stack.len() / 8;
            let word = |i: usize| {
                stack
                    .get(i * 8..i * 8 + 8)
                    .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            };
            let from = match self.frames.as_slice() {
                [_, .., last] => (0..words).find(|i| word(*i) == *last).map_or(0, |i| i + 1),
                _ => 0,
            };
            let mut guesses = 0;
            for i in from..words.saturating_sub(1) {
                if guesses >= MAX_FP_GUESSES {
                    break;
                }
                if !self.is_code(word(i + 1)) {
                    continue;
                }
                guesses += 1;
                guessed = true;
                let fp = regs.sp + (i as u64) * 8;
                let w = self.walk_once(
                    Regs {
                        fp: Some(fp),
                        ..regs
                    },
                    stack,
                    max,
                );
                if (w.complete, w.frames) > (best.0.complete, best.0.frames) {
                    best = (w, Some(fp));
                }
            }
        }
        if guessed {
            self.walk_once(Regs { fp: best.1, ..regs }, stack, max);
        }
        out.extend(self.frames.iter().map(|a| *a as usize));
    }

    fn walk_once(&mut self, regs: Regs, stack: &[u8], max: usize) -> Walk {
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
        let mut complete = false;
        while self.frames.len() < max {
            match iter.next() {
                // A return address outside every module's code is not a frame: the walk
                // went wrong (a guessed frame pointer, or a stack cut short).
                Ok(Some(f)) if self.frames.is_empty() || in_code(&self.code, f.address()) => {
                    self.frames.push(f.address())
                }
                Ok(Some(_)) => break,
                Ok(None) => {
                    complete = true;
                    break;
                }
                Err(_) => break,
            }
        }
        Walk {
            frames: self.frames.len(),
            complete,
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
