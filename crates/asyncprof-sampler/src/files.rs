//! The files of the code loaded in this process, for symbolizing stall stacks from the files
//! themselves: where each module's code sits in memory, and a read-only mapping of a file.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// One loaded module and its file.
#[derive(Debug, Clone)]
pub struct ModuleFile {
    /// The module's file (the executable's through `/proc/self/exe`).
    pub path: PathBuf,
    /// The load bias: actual address minus the address stated in the file.
    pub bias: u64,
    /// Actual addresses of its executable segments.
    pub code: Vec<Range<u64>>,
}

/// The modules loaded now, with executable code and a file on disk.
pub fn module_files() -> Vec<ModuleFile> {
    let mut out: Vec<ModuleFile> = Vec::new();
    crate::signal::modules::for_each_module(|name, bias, phdrs| {
        let path = if name.is_empty() {
            match std::fs::read_link("/proc/self/exe") {
                Ok(p) => p,
                Err(_) => return,
            }
        } else {
            PathBuf::from(name)
        };
        // The vDSO has no file.
        if !path.is_absolute() {
            return;
        }
        let code: Vec<Range<u64>> = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
            .map(|p| {
                let start = bias.wrapping_add(p.p_vaddr);
                start..start.wrapping_add(p.p_memsz)
            })
            .collect();
        if !code.is_empty() {
            out.push(ModuleFile { path, bias, code });
        }
    });
    out
}

/// A file mapped read-only into memory, unmapped when dropped: its pages count in the
/// process's memory only while they are read and mapped.
#[derive(Debug)]
pub struct MappedFile(memmap2::Mmap);

impl MappedFile {
    /// Map `path` read-only.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened or mapped.
    pub fn map(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        // SAFETY: a private read-only mapping. Another process truncating the file while it
        // is mapped would make a read fault; the files mapped here are this process's own
        // loaded modules, which the loader keeps open and which are replaced, not rewritten,
        // by installers.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        // Read here and there: no read-ahead.
        let _ = map.advise(memmap2::Advice::Random);
        Ok(MappedFile(map))
    }
}

impl MappedFile {
    /// Let go of the pages read so far: they leave the process's resident memory, and a later
    /// read maps them again from the file (the page cache, usually).
    pub fn release_pages(&self) {
        // SAFETY: MADV_DONTNEED on a private mapping drops its pages; the next read of one
        // gets the file's bytes again. This mapping is read-only and never written, so what a
        // reader sees does not change, and references into it stay valid.
        let _ = unsafe { self.0.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    }
}

impl std::ops::Deref for MappedFile {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}
