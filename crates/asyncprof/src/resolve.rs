//! Addresses to source frames, read from the loaded modules' own files, lazily and in bounded
//! memory. Cold path: the aggregator thread, once per new address of a stall's stacks.
//!
//! A general-purpose symbolizer (the `backtrace` crate's) parses every compilation unit's
//! ranges, abbreviations and line-program headers up front and keeps each unit it visits
//! fully parsed (all its lines and functions), and it reads a system library's separate debug
//! file when one is installed: tens of MiB at a service's first stall. Here a batch of
//! addresses maps its module's file for the batch only, finds each address's unit in
//! `.debug_aranges`, walks that unit's line program and its tree of functions as a stream,
//! keeping only the rows and entries that contain the address, and lets go of everything
//! (the mapping included) when the batch is done. A module without DWARF gets names from its
//! symbol tables. One pass over the symbol tables per batch (reading only the names of the
//! symbols that cover an address, and letting go of the pages after) finds the functions whose
//! code the compiler merged with others' (several symbols at one address): their other names
//! go with the frame (`Frame::same_code`). Names, files and lines come out as `addr2line` gives them: the innermost
//! inlined frame first, each frame's function as its debug info names it (demangled), each
//! file as the line program spells it under the unit's directory.

use std::collections::HashMap;

use asyncprof_format::Frame;
use asyncprof_sampler::files::{module_files, MappedFile, ModuleFile};
use gimli::{EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection, ObjectSymbol};

type R<'a> = EndianSlice<'a, RunTimeEndian>;

/// The frames at each of `addrs` (actual addresses, already one byte back for return
/// addresses), innermost first; an address no module claims, or that nothing names, gets no
/// frame (the caller names it by its address).
pub(crate) fn resolve(addrs: &[u64]) -> HashMap<u64, Vec<Frame>> {
    let modules = module_files();
    let mut out = HashMap::new();
    for m in &modules {
        let mine: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| m.code.iter().any(|r| r.contains(a)))
            .collect();
        if mine.is_empty() {
            continue;
        }
        for (a, frames) in resolve_in(m, &mine) {
            out.insert(a, frames);
        }
    }
    out
}

/// The frames of `addrs` from module `m`'s file. Everything read is let go on return.
fn resolve_in(m: &ModuleFile, addrs: &[u64]) -> Vec<(u64, Vec<Frame>)> {
    let Ok(map) = MappedFile::map(&m.path) else {
        return Vec::new();
    };
    let Ok(obj) = object::File::parse(&*map) else {
        return Vec::new();
    };
    let dwarf = load_dwarf(&obj, |_| true);
    let stated: Vec<u64> = addrs.iter().map(|a| a.wrapping_sub(m.bias)).collect();
    let mut found: Vec<Vec<Frame>> = match &dwarf {
        Some(d) => frames_from_dwarf(d, &stated, || map.release_pages()),
        None => vec![Vec::new(); stated.len()],
    };
    // The symbols covering each address, in one pass over the symbol tables: they name the
    // functions the debug info does not, and a function merged with others of the same code
    // (the debug info names one of them) goes by all of theirs.
    let covering = covering_symbols(&obj, &stated);
    map.release_pages();
    let mut out = Vec::with_capacity(addrs.len());
    for ((&a, s), mut frames) in addrs.iter().zip(&stated).zip(found.drain(..)) {
        let names = covering.get(s).map_or(&[][..], Vec::as_slice);
        let name = names.first().map(|n| demangle(n));
        if frames.is_empty() {
            if let Some(name) = name {
                frames.push(Frame::new(name, None, None));
            }
        } else if let Some(f) = frames.last_mut().filter(|f| f.function.is_empty()) {
            // The outermost function unnamed by the debug info: the symbol tables name it.
            f.function = name.unwrap_or_default();
        }
        frames.retain(|f| !f.function.is_empty() || f.file.is_some());
        let mut all: Vec<String> = names.iter().map(|n| demangle(n)).collect();
        all.sort();
        all.dedup();
        if let (true, Some(f)) = (all.len() > 1, frames.last_mut()) {
            f.same_code = other_names(&f.function, &all);
            if asyncprof_format::culprit::is_drop_glue(&f.function) {
                // Drop glue of several types compiled to one code: which type this drop
                // was is not known, so none is named.
                f.function = asyncprof_format::culprit::without_type_arguments(&f.function);
            }
        }
        out.push((a, frames));
    }
    out
}

/// The module's DWARF sections (those `keep` keeps; the others read as empty), uncompressed
/// ones only: compressed sections would have to be inflated whole.
fn load_dwarf<'a>(
    obj: &object::File<'a>,
    keep: impl Fn(gimli::SectionId) -> bool,
) -> Option<gimli::Dwarf<R<'a>>> {
    let endian = if obj.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let section = |name: &str| -> &'a [u8] {
        obj.section_by_name(name)
            .filter(|s| {
                matches!(
                    s.compressed_file_range().map(|r| r.format),
                    Ok(object::CompressionFormat::None)
                )
            })
            .and_then(|s| s.data().ok())
            .unwrap_or(&[])
    };
    gimli::Dwarf::load(|id| -> Result<R<'a>, ()> {
        let data = if keep(id) { section(id.name()) } else { &[] };
        Ok(EndianSlice::new(data, endian))
    })
    .ok()
}

/// The symbols covering each of `addrs` (stated addresses): the names of the innermost ones
/// (those starting last at or below it: several where functions of the same code were
/// merged), as met, each once; in one pass over the symbol tables, reading only the names of
/// symbols that cover an address.
fn covering_symbols<'a>(obj: &object::File<'a>, addrs: &[u64]) -> HashMap<u64, Vec<&'a str>> {
    let mut sorted = addrs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut at: HashMap<u64, (u64, Vec<&'a str>)> = HashMap::new();
    if sorted.is_empty() {
        return HashMap::new();
    }
    for sym in obj.symbols().chain(obj.dynamic_symbols()) {
        if sym.kind() != object::SymbolKind::Text {
            continue;
        }
        let start = sym.address();
        let end = start.saturating_add(sym.size().max(1));
        let first = sorted.partition_point(|&a| a < start);
        if sorted.get(first).is_none_or(|&a| a >= end) {
            continue;
        }
        let Ok(name) = sym.name() else {
            continue;
        };
        for &a in sorted[first..].iter().take_while(|&&a| a < end) {
            let (best, names) = at.entry(a).or_insert((start, Vec::new()));
            if start > *best {
                *best = start;
                names.clear();
            }
            if start == *best && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    at.into_iter().map(|(a, (_, names))| (a, names)).collect()
}

/// At most this many other names are kept for a function.
const MAX_OTHER_NAMES: usize = 4;

/// The names in `all` (a merged function's symbols) that name another function than
/// `function` (the debug info's name, full or bare): Rust paths whose last segment differs
/// from its (`TcpStream::read` for `UdpSocket::recv`). Twins of one method name
/// (`UdpSocket::recv`, `UnixDatagram::recv`) are not told apart by a caller's line, and
/// the C library's aliases of one function (`recv`, `__recv`) are not Rust paths: both left
/// out. At most [`MAX_OTHER_NAMES`].
fn other_names(function: &str, all: &[String]) -> Vec<String> {
    use asyncprof_format::culprit::last_segment;
    let mut methods = vec![last_segment(function)];
    let mut out: Vec<String> = Vec::new();
    for n in all.iter().filter(|n| n.contains("::")) {
        let method = last_segment(n);
        if out.len() < MAX_OTHER_NAMES && !methods.contains(&method) {
            methods.push(method);
            out.push(n.clone());
        }
    }
    out
}

/// `name` demangled without its hash, as `backtrace` shows it.
fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_string(),
    }
}

/// A function entry that contains the address: its name and, for an inlined call, where it
/// was called from (file index in the unit's line program, line).
struct Scope {
    name: String,
    call: Option<(u64, u32)>,
}

/// The frames at each of stated addresses `addrs`, innermost first (none where no unit covers
/// it). The addresses of one unit are found in one pass over its line program and one over its
/// tree of functions; `release` lets go of what a unit read before the next is read. A unit
/// whose entries cannot be read as a whole is read again for each of its addresses, so that
/// one damaged entry costs only the addresses inside it their frames.
fn frames_from_dwarf(
    dwarf: &gimli::Dwarf<R<'_>>,
    addrs: &[u64],
    release: impl Fn(),
) -> Vec<Vec<Frame>> {
    let mut out = vec![Vec::new(); addrs.len()];
    let units = units_of(dwarf, addrs);
    let mut by_unit: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, unit) in units.iter().enumerate() {
        if let Some(u) = unit {
            by_unit.entry(u.0).or_default().push(i);
        }
    }
    for (unit, members) in by_unit {
        let these: Vec<u64> = members.iter().map(|&i| addrs[i]).collect();
        let offset = gimli::DebugInfoOffset(unit);
        match frames_in_unit(dwarf, offset, &these) {
            Ok(frames) => {
                for (i, f) in members.iter().zip(frames) {
                    out[*i] = f;
                }
            }
            Err(_) => {
                for (&i, &a) in members.iter().zip(&these) {
                    if let Ok(mut f) = frames_in_unit(dwarf, offset, &[a]) {
                        out[i] = f.pop().unwrap_or_default();
                    }
                }
            }
        }
        release();
    }
    out
}

/// The frames at each of `addrs`, stated addresses that unit `offset` covers.
fn frames_in_unit(
    dwarf: &gimli::Dwarf<R<'_>>,
    offset: gimli::DebugInfoOffset,
    addrs: &[u64],
) -> gimli::Result<Vec<Vec<Frame>>> {
    let n = addrs.len();
    let header = dwarf.debug_info.header_from_offset(offset)?;
    let unit = dwarf.unit(header)?;
    let unit = gimli::UnitRef::new(dwarf, &unit);
    let Some(program) = unit.line_program.clone() else {
        return Ok(vec![Vec::new(); n]);
    };
    let (order, sorted) = in_address_order(addrs);
    // The line-table row that covers each address (the first that does), in one pass that
    // stops once every address has one.
    let mut at: Vec<Option<(u64, u32)>> = vec![None; n];
    let mut left = n;
    let mut prev: Option<(u64, u64, u32)> = None;
    // The first address at or past the previous row's: rows of a sequence go up, so it moves
    // only forward within one (and is found again where they do not).
    let mut next = 0;
    let mut rows = program.rows();
    while left > 0 {
        let Some((_, row)) = rows.next_row()? else {
            break;
        };
        let line = row.line().map_or(0, |l| l.get() as u32);
        if let Some((pa, pf, pl)) = prev {
            if next > 0 && sorted[next - 1] >= pa {
                next = sorted.partition_point(|&a| a < pa);
            }
            if next < n && sorted[next] < pa {
                next += sorted[next..].partition_point(|&a| a < pa);
            }
            for k in next..n {
                if sorted[k] >= row.address() {
                    break;
                }
                if at[order[k]].is_none() {
                    at[order[k]] = Some((pf, pl));
                    left -= 1;
                }
            }
        }
        prev = if row.end_sequence() {
            None
        } else {
            Some((row.address(), row.file_index(), line))
        };
    }
    let header = rows.header().clone();
    let file = |index: u64| -> Option<String> {
        let entry = header.file(index)?;
        render_file(unit, entry, &header).ok()
    };
    // The functions that contain each address, outermost first.
    let mut scopes: Vec<Vec<Scope>> = (0..n).map(|_| Vec::new()).collect();
    let mut tree = unit.entries_tree(None)?;
    walk(unit, tree.root()?, addrs, (0..n).collect(), &mut scopes)?;

    let mut out = Vec::with_capacity(n);
    for (at, scopes) in at.into_iter().zip(scopes) {
        let (mut file_at, mut line_at) = match at {
            Some((f, l)) => (file(f), (l != 0).then_some(l)),
            None => (None, None),
        };
        if scopes.is_empty() {
            out.push(match file_at {
                Some(_) => vec![Frame::new(String::new(), file_at, line_at)],
                None => Vec::new(),
            });
            continue;
        }
        let mut frames = Vec::with_capacity(scopes.len());
        for s in scopes.into_iter().rev() {
            frames.push(Frame::new(s.name, file_at.take(), line_at.take()));
            if let Some((f, l)) = s.call {
                file_at = file(f);
                line_at = (l != 0).then_some(l);
            }
        }
        out.push(frames);
    }
    Ok(out)
}

/// The indices of `addrs` in address order, and the addresses in that order.
fn in_address_order(addrs: &[u64]) -> (Vec<usize>, Vec<u64>) {
    let mut order: Vec<usize> = (0..addrs.len()).collect();
    order.sort_unstable_by_key(|&i| addrs[i]);
    let sorted = order.iter().map(|&i| addrs[i]).collect();
    (order, sorted)
}

/// For each of `addrs` (by index) in `pending`, collect into its `scopes` the subprogram and
/// inlined-call entries under `node` that contain it, outermost first: at each level the first
/// that contains it; subtrees that contain none of them are skipped.
fn walk<'d>(
    unit: gimli::UnitRef<'_, R<'d>>,
    node: gimli::EntriesTreeNode<'_, '_, R<'d>>,
    addrs: &[u64],
    mut pending: Vec<usize>,
    scopes: &mut [Vec<Scope>],
) -> gimli::Result<()> {
    let mut children = node.children();
    while !pending.is_empty() {
        let Some(child) = children.next()? else {
            break;
        };
        let entry = child.entry();
        let tag = entry.tag();
        let function = tag == gimli::DW_TAG_subprogram || tag == gimli::DW_TAG_inlined_subroutine;
        if function {
            let inside = contained(unit, entry, addrs, &pending)?;
            if inside.is_empty() {
                continue;
            }
            let call = if tag == gimli::DW_TAG_inlined_subroutine {
                let file = match entry.attr_value(gimli::DW_AT_call_file) {
                    Some(gimli::AttributeValue::FileIndex(f)) => f,
                    Some(v) => v.udata_value().unwrap_or(0),
                    None => 0,
                };
                let line = entry
                    .attr_value(gimli::DW_AT_call_line)
                    .and_then(|v| v.udata_value())
                    .unwrap_or(0);
                Some((file, line as u32))
            } else {
                None
            };
            // A name that cannot be read leaves the frame unnamed, not the address.
            let name = name_of(unit, entry, 4).ok().flatten().unwrap_or_default();
            for &i in &inside {
                scopes[i].push(Scope {
                    name: name.clone(),
                    call,
                });
            }
            pending.retain(|i| inside.binary_search(i).is_err());
            walk(unit, child, addrs, inside, scopes)?;
            continue;
        }
        // Namespaces and lexical blocks hold functions too.
        if tag == gimli::DW_TAG_namespace
            || tag == gimli::DW_TAG_lexical_block
            || tag == gimli::DW_TAG_structure_type
            || tag == gimli::DW_TAG_enumeration_type
            || tag == gimli::DW_TAG_union_type
        {
            let before: Vec<usize> = pending.iter().map(|&i| scopes[i].len()).collect();
            walk(unit, child, addrs, pending.clone(), scopes)?;
            let mut k = 0;
            pending.retain(|&i| {
                let unfound = scopes[i].len() == before[k];
                k += 1;
                unfound
            });
        }
    }
    Ok(())
}

/// Those of `pending` (indices into `addrs`) whose address `entry`'s code ranges contain, in
/// index order.
fn contained<'d>(
    unit: gimli::UnitRef<'_, R<'d>>,
    entry: &gimli::DebuggingInformationEntry<R<'d>>,
    addrs: &[u64],
    pending: &[usize],
) -> gimli::Result<Vec<usize>> {
    let mut inside = Vec::new();
    let mut ranges = unit.die_ranges(entry)?;
    while let Some(r) = ranges.next()? {
        inside.extend(
            pending
                .iter()
                .copied()
                .filter(|&i| r.begin <= addrs[i] && addrs[i] < r.end),
        );
        if inside.len() >= pending.len() {
            inside.sort_unstable();
            inside.dedup();
            // Every one inside: the ranges after are not read.
            if inside.len() == pending.len() {
                return Ok(inside);
            }
        }
    }
    inside.sort_unstable();
    inside.dedup();
    Ok(inside)
}

/// The name of a function entry: its linkage name, else its name, else its origin's
/// (following at most `depth` abstract origins or specifications), demangled.
fn name_of<'d>(
    unit: gimli::UnitRef<'_, R<'d>>,
    entry: &gimli::DebuggingInformationEntry<R<'d>>,
    depth: u32,
) -> gimli::Result<Option<String>> {
    for at in [
        gimli::DW_AT_linkage_name,
        gimli::DW_AT_MIPS_linkage_name,
        gimli::DW_AT_name,
    ] {
        if let Some(v) = entry.attr_value(at) {
            if let Ok(s) = unit.attr_string(v) {
                return Ok(Some(demangle(&s.to_string_lossy())));
            }
        }
    }
    if depth == 0 {
        return Ok(None);
    }
    for at in [gimli::DW_AT_abstract_origin, gimli::DW_AT_specification] {
        match entry.attr_value(at) {
            Some(gimli::AttributeValue::UnitRef(offset)) => {
                let origin = unit.entry(offset)?;
                return name_of(unit, &origin, depth - 1);
            }
            Some(gimli::AttributeValue::DebugInfoRef(offset)) => {
                if let Some(uo) = offset.to_unit_offset(&unit.header) {
                    let origin = unit.entry(uo)?;
                    return name_of(unit, &origin, depth - 1);
                }
                // Another unit's entry (code inlined across units): read that unit for it.
                let Some(header) = unit_at(unit.dwarf, offset)? else {
                    return Ok(None);
                };
                let Some(uo) = offset.to_unit_offset(&header) else {
                    return Ok(None);
                };
                let other = unit.dwarf.unit(header)?;
                let other = gimli::UnitRef::new(unit.dwarf, &other);
                let origin = other.entry(uo)?;
                return name_of(other, &origin, depth - 1);
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The header of the unit that holds `.debug_info` offset `offset`. Units lie end to end:
/// from the nearest unit start below it that `.debug_aranges` names (that small section's
/// headers, not the unit headers spread over `.debug_info`, whose pages would all count in
/// the service's memory), the headers that follow, to the one that holds it.
fn unit_at<'d>(
    dwarf: &gimli::Dwarf<R<'d>>,
    offset: gimli::DebugInfoOffset,
) -> gimli::Result<Option<gimli::UnitHeader<R<'d>>>> {
    let mut pos = 0;
    let mut headers = dwarf.debug_aranges.headers();
    while let Some(h) = headers.next()? {
        let start = h.debug_info_offset().0;
        if start <= offset.0 && start > pos {
            pos = start;
        }
    }
    loop {
        let Ok(header) = dwarf
            .debug_info
            .header_from_offset(gimli::DebugInfoOffset(pos))
        else {
            return Ok(None);
        };
        let end = pos + header.length_including_self();
        if offset.0 < end {
            return Ok(Some(header));
        }
        if end <= pos {
            return Ok(None);
        }
        pos = end;
    }
}

/// A line program's file as `addr2line` renders it: under the unit's directory, then the
/// file's directory, unless either is absolute.
fn render_file<'d>(
    unit: gimli::UnitRef<'_, R<'d>>,
    file: &gimli::FileEntry<R<'d>>,
    header: &gimli::LineProgramHeader<R<'d>>,
) -> gimli::Result<String> {
    let mut path = match unit.comp_dir {
        Some(dir) => dir.to_string_lossy().into_owned(),
        None => String::new(),
    };
    if file.directory_index() != 0 {
        if let Some(dir) = file.directory(header) {
            path_push(&mut path, &unit.attr_string(dir)?.to_string_lossy());
        }
    }
    path_push(
        &mut path,
        &unit.attr_string(file.path_name())?.to_string_lossy(),
    );
    Ok(path)
}

fn path_push(path: &mut String, p: &str) {
    if p.starts_with('/') {
        *path = p.to_string();
    } else {
        if !path.is_empty() && !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(p);
    }
}

/// The unit whose address ranges in `.debug_aranges` hold each of `addrs` (the first that
/// does), in one pass over that small section; without it, the unit whose own ranges do (a
/// streaming pass over every unit's first entry). An address the section does not hold (code
/// without debug info) is named from the symbol tables, without reading every unit. Where the
/// pass fails, the addresses claimed before keep their unit.
fn units_of(dwarf: &gimli::Dwarf<R<'_>>, addrs: &[u64]) -> Vec<Option<gimli::DebugInfoOffset>> {
    let (order, sorted) = in_address_order(addrs);
    let mut out = vec![None; addrs.len()];
    let mut unclaimed = addrs.len();
    let mut claim = |begin: u64, end: u64, unit: gimli::DebugInfoOffset| {
        let first = sorted.partition_point(|&a| a < begin);
        for k in first..sorted.len() {
            if sorted[k] >= end {
                break;
            }
            if out[order[k]].is_none() {
                out[order[k]] = Some(unit);
                unclaimed -= 1;
            }
        }
        unclaimed
    };
    let mut pass = || -> gimli::Result<()> {
        let mut headers = dwarf.debug_aranges.headers();
        let mut any = false;
        while let Some(h) = headers.next()? {
            any = true;
            let mut entries = h.entries();
            while let Some(e) = entries.next()? {
                let r = e.range();
                if claim(r.begin, r.end, h.debug_info_offset()) == 0 {
                    return Ok(());
                }
            }
        }
        if any {
            return Ok(());
        }
        let mut units = dwarf.units();
        while let Some(header) = units.next()? {
            let Some(offset) = header.offset().to_debug_info_offset(&header) else {
                continue;
            };
            let unit = dwarf.unit(header)?;
            let mut ranges = dwarf.unit_ranges(&unit)?;
            while let Some(r) = ranges.next()? {
                if claim(r.begin, r.end, offset) == 0 {
                    return Ok(());
                }
            }
        }
        Ok(())
    };
    let _ = pass();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_known_function() -> u64 {
        std::hint::black_box(a_known_function as fn() -> u64 as usize as u64)
    }

    #[test]
    fn names_this_binarys_functions_as_backtrace_does() {
        // Addresses across this test binary: a function of this crate, std's, tokio's.
        let mut addrs = vec![
            a_known_function() + 4,
            std::thread::sleep as fn(std::time::Duration) as usize as u64 + 8,
            tokio::runtime::Builder::new_multi_thread as fn() -> tokio::runtime::Builder as usize
                as u64
                + 8,
        ];
        // And a real stack: every return address on it.
        backtrace::trace(|f| {
            if let Some(a) = (f.ip() as u64).checked_sub(1) {
                addrs.push(a);
            }
            true
        });
        // This binary's addresses: a system library's names may come from a separate debug
        // file, which this resolver does not read.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let main = module_files().into_iter().find(|m| m.path == exe).unwrap();
        addrs.retain(|a| main.code.iter().any(|r| r.contains(a)));
        // And 400 addresses spread over its code: inlined calls across units, code without
        // debug info, every kind of unit.
        for r in &main.code {
            let step = ((r.end - r.start) / 400).max(1);
            addrs.extend(
                (0..400)
                    .map(|i| r.start + i * step + 3)
                    .filter(|a| r.contains(a)),
            );
        }
        let ours = resolve(&addrs);
        let map = MappedFile::map(&main.path).unwrap();
        let obj = object::File::parse(&*map).unwrap();
        // Merged: two or more names among the innermost symbols covering it (read here
        // symbol by symbol, apart from the resolver's pass).
        let merged = |a: u64| {
            let stated = a.wrapping_sub(main.bias);
            let covering: Vec<(u64, String)> = obj
                .symbols()
                .chain(obj.dynamic_symbols())
                .filter(|s| s.kind() == object::SymbolKind::Text)
                .filter(|s| s.address() <= stated && stated < s.address() + s.size().max(1))
                .filter_map(|s| Some((s.address(), demangle(s.name().ok()?))))
                .collect();
            let inner = covering.iter().map(|(start, _)| *start).max();
            let mut names: Vec<&String> = covering
                .iter()
                .filter(|(start, _)| Some(*start) == inner)
                .map(|(_, n)| n)
                .collect();
            names.sort();
            names.dedup();
            names.len() > 1
        };
        let mut compared = 0;
        for a in &addrs {
            let mut theirs = Vec::new();
            // `backtrace::resolve` looks up one byte before the address it is given.
            backtrace::resolve((*a + 1) as *mut std::ffi::c_void, |sym| {
                theirs.push(Frame::new(
                    sym.name().map(|n| format!("{n:#}")).unwrap_or_default(),
                    sym.filename().map(|p| p.display().to_string()),
                    sym.lineno(),
                ));
            });
            // backtrace gives one name per function (its other names are this resolver's),
            // and names drop glue that several types share (several symbols at its address)
            // by the debug info's one type (this resolver by none).
            let mut mine = ours.get(a).cloned().unwrap_or_default();
            for f in &mut mine {
                f.same_code.clear();
            }
            if let (Some(m), Some(t)) = (mine.last(), theirs.last_mut()) {
                use asyncprof_format::culprit::{is_drop_glue, without_type_arguments};
                if is_drop_glue(&t.function)
                    && m.function == without_type_arguments(&t.function)
                    && merged(*a)
                {
                    t.function.clone_from(&m.function);
                }
            }
            if theirs.iter().any(|f| f.file.is_some()) {
                assert_eq!(mine, theirs, "address {a:#x}");
                compared += 1;
            }
        }
        assert!(compared >= 200, "only {compared} addresses had debug info");
        assert!(ours[&addrs[0]]
            .iter()
            .any(|f| f.function.contains("a_known_function")));
    }

    /// std's `TcpStream::read` and `UdpSocket::recv` have the same machine code and are one
    /// function (two symbols at one address): the frame says so, whichever name it has; a
    /// function of one name has none.
    /// Known truth: std's merged `UdpSocket::recv` (the debug info's name, full or bare), its
    /// twins `TcpStream::read` and `UnixDatagram::recv`, and the C library's `__recv`.
    #[test]
    fn other_names_are_other_methods_of_rust_paths() {
        let all: Vec<String> = [
            "<std::net::tcp::TcpStream as std::io::Read>::read",
            "<std::net::udp::UdpSocket>::recv",
            "<std::os::unix::net::datagram::UnixDatagram>::recv",
            "__recv",
        ]
        .map(String::from)
        .to_vec();
        let read = ["<std::net::tcp::TcpStream as std::io::Read>::read".to_string()];
        assert_eq!(other_names("<std::net::udp::UdpSocket>::recv", &all), read);
        assert_eq!(other_names("recv", &all), read);
        let many: Vec<String> = (0..9).map(|i| format!("a::m{i}")).collect();
        assert_eq!(other_names("a::f", &many).len(), MAX_OTHER_NAMES);
        assert!(other_names("a::f", &[]).is_empty());
    }

    #[test]
    fn a_function_merged_with_others_keeps_their_names() {
        use std::io::Read;
        let read = <std::net::TcpStream as Read>::read
            as fn(&mut std::net::TcpStream, &mut [u8]) -> std::io::Result<usize>
            as usize as u64;
        let recv = std::net::UdpSocket::recv
            as fn(&std::net::UdpSocket, &mut [u8]) -> std::io::Result<usize>
            as usize as u64;
        let addrs = [read + 4, recv + 4, a_known_function() + 4];
        let ours = resolve(&addrs);
        let names = |a: u64| {
            let f = ours[&a].last().unwrap();
            let mut all = f.same_code.clone();
            all.push(f.function.clone());
            all
        };
        if read == recv {
            for a in [read + 4, recv + 4] {
                let all = names(a);
                assert!(
                    all.iter()
                        .any(|n| n.contains("TcpStream") && n.ends_with("::read")),
                    "{all:?}"
                );
                assert!(
                    all.iter()
                        .any(|n| n.contains("UdpSocket") && n.ends_with("::recv")),
                    "{all:?}"
                );
            }
        } else {
            eprintln!("this std does not merge TcpStream::read with UdpSocket::recv");
        }
        assert!(ours[&(a_known_function() + 4)]
            .iter()
            .all(|f| f.same_code.is_empty()));
    }

    /// Known truth: each address looked up alone. A batch reads each unit once for all of its
    /// addresses (sorted, with inlined calls nested differently under each): it must name
    /// every address as the lookup of that address alone does.
    #[test]
    fn a_batch_names_each_address_as_it_is_named_alone() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let main = module_files().into_iter().find(|m| m.path == exe).unwrap();
        // Addresses close together (several in one unit, one function, one inlined call) and
        // spread over the code.
        let mut addrs = Vec::new();
        for r in &main.code {
            let step = ((r.end - r.start) / 150).max(1);
            for i in 0..150 {
                let a = r.start + i * step;
                addrs.extend(
                    [a + 3, a + 40, a + 41]
                        .into_iter()
                        .filter(|a| r.contains(a)),
                );
            }
        }
        addrs.push(a_known_function() + 4);
        // Out of address order, as a stack's are.
        addrs.reverse();
        let batch = resolve(&addrs);
        let mut named = 0;
        for a in &addrs {
            let alone = resolve(&[*a]);
            assert_eq!(batch.get(a), alone.get(a), "address {a:#x}");
            named += usize::from(
                alone
                    .get(a)
                    .is_some_and(|f| f.iter().any(|f| f.line.is_some())),
            );
        }
        assert!(named >= 200, "only {named} addresses had lines");
    }

    /// Known truth: the units `.debug_aranges` gives. Without that section (a toolchain or
    /// linker may leave it out) the addresses are claimed from the units' own ranges, all in
    /// one pass: each address the section places gets the same unit there.
    #[test]
    fn without_aranges_each_address_gets_the_unit_the_section_gives() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let main = module_files().into_iter().find(|m| m.path == exe).unwrap();
        let map = MappedFile::map(&main.path).unwrap();
        let obj = object::File::parse(&*map).unwrap();
        let mut stated = Vec::new();
        for r in &main.code {
            let step = ((r.end - r.start) / 300).max(1);
            stated.extend(
                (0..300)
                    .map(|i| r.start + i * step + 3)
                    .filter(|a| r.contains(a))
                    .map(|a| a.wrapping_sub(main.bias)),
            );
        }
        stated.reverse();
        assert!(
            obj.section_by_name(".debug_aranges")
                .is_some_and(|s| s.size() > 0),
            "the test binary has the section the pass without it is compared with"
        );
        let with = units_of(&load_dwarf(&obj, |_| true).unwrap(), &stated);
        let without = units_of(
            &load_dwarf(&obj, |id| id != gimli::SectionId::DebugAranges).unwrap(),
            &stated,
        );
        let mut compared = 0;
        for (a, (w, wo)) in stated.iter().zip(with.iter().zip(&without)) {
            if let Some(unit) = w {
                assert_eq!(Some(*unit), *wo, "stated address {a:#x}");
                compared += 1;
            }
        }
        assert!(compared >= 100, "only {compared} addresses in a unit");
    }
}
