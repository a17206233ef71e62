//! The terminal UI of `asyncprof top` (ratatui): a status header, the four views as tabs, a
//! stack view of the selected stall, help, and the loss counters. Keys follow top, htop and
//! tokio-console: `q` quits, `?` helps, `s` sorts, `/` filters, space pauses.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use asyncprof_format::StallRecord;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, TableState, Tabs, Wrap};
use ratatui::Frame;

use super::follow::{Follower, Writer};
use super::view::{self, Moment, Tab};
use super::POLL_EVERY;

/// Redraw at least this often, for the clock and the writer's state.
const REDRAW_EVERY: Duration = Duration::from_secs(1);

/// Redraw for new data at most this often.
const REDRAW_AT_MOST: Duration = Duration::from_millis(250);

const HELP: &[(&str, &str)] = &[
    ("1 2 3 4, Tab", "stalls, spawn locations, queues, workers"),
    ("↑ ↓ j k, PgUp PgDn, Home End", "select a row"),
    ("Enter", "the selected stall's stacks (Esc closes)"),
    ("s / S", "sort by the next column / reverse the order"),
    ("/", "filter rows by text (Enter keeps it, Esc clears it)"),
    ("space, p", "pause the display (the file is read on resume)"),
    ("← →", "step back and forth through the run's snapshots"),
    ("L", "back to live (the newest snapshot)"),
    ("?", "this help"),
    ("q, Ctrl-C", "quit"),
];

/// What the user is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Table,
    Stack,
    Help,
    Filter,
}

/// What a view's rows are made of: the view, the moment (a step back in time, or live), the
/// bytes of the file read, how often it was read from its start again, and the parts of the run
/// followed into.
type RowsOf = (Tab, Option<usize>, u64, u32, u32);

struct App {
    follower: Follower,
    tab: Tab,
    /// Per view: the column rows are sorted by, and whether reversed.
    sort: [(usize, bool); 4],
    table: [TableState; 4],
    filter: String,
    mode: Mode,
    paused: bool,
    /// Stepping through time: an index into the timeline's kept snapshots; `None` is live.
    cursor: Option<usize>,
    stack_scroll: u16,
    /// The rows of the current view, before sorting and filtering, and what they were made of.
    cache: Option<(RowsOf, Vec<view::Row>)>,
}

/// Run the UI until the user quits, or SIGTERM or SIGHUP arrives; the terminal is restored
/// however it ends (a panic too: ratatui's hook).
pub(crate) fn run(follower: Follower) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    watch_terminal(stop.clone());
    let mut terminal = ratatui::try_init()?;
    let mut app = App {
        follower,
        tab: Tab::Stalls,
        sort: Tab::ALL.map(|t| (t.columns().1, false)),
        table: Default::default(),
        filter: String::new(),
        mode: Mode::Table,
        paused: false,
        cursor: None,
        stack_scroll: 0,
        cache: None,
    };
    let result = app.run(&mut terminal, &stop);
    ratatui::restore();
    result
}

/// End the process once its terminal is gone. crossterm's event reader retries a hung-up
/// terminal's end of file forever, busy, without returning even at its timeout, so the UI's
/// loop would never see the hang-up (nor SIGHUP's flag) and would burn a core. A thread looks
/// every 250 ms whether the terminal device still exists (a closed pseudo-terminal's
/// `/dev/pts` entry goes away; a new one at the same path is another inode), and whether a
/// SIGTERM or SIGHUP has gone unanswered for a second; either ends the process (there is no
/// terminal left to restore).
fn watch_terminal(stop: Arc<AtomicBool>) {
    use std::os::unix::fs::MetadataExt;
    let (Ok(path), Ok(meta)) = (
        std::fs::read_link("/proc/self/fd/1"),
        std::fs::metadata("/proc/self/fd/1"),
    ) else {
        return;
    };
    let device = (meta.dev(), meta.ino());
    let watch = move || {
        let mut stopped: Option<Instant> = None;
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let present = std::fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == device);
            if stop.load(Relaxed) {
                stopped.get_or_insert_with(Instant::now);
            }
            if !present || stopped.is_some_and(|t| t.elapsed() >= Duration::from_secs(1)) {
                std::process::exit(0);
            }
        }
    };
    // Without the thread the UI still works; only a hung-up terminal is not noticed.
    let _ = std::thread::Builder::new()
        .name("asyncprof-top-tty".into())
        .spawn(watch);
}

impl App {
    fn run(&mut self, terminal: &mut ratatui::DefaultTerminal, stop: &AtomicBool) -> Result<()> {
        // New data is drawn at most every REDRAW_AT_MOST (a storm of stalls would otherwise
        // redraw on every look at the file); a key or a resize is drawn at once.
        let (mut new_data, mut input) = (true, true);
        let mut last_draw = Instant::now();
        loop {
            if stop.load(Relaxed) {
                return Ok(());
            }
            if !self.paused && self.follower.poll() {
                new_data = true;
            }
            let since = last_draw.elapsed();
            if input || (new_data && since >= REDRAW_AT_MOST) || since >= REDRAW_EVERY {
                terminal.draw(|f| self.draw(f))?;
                last_draw = Instant::now();
                (new_data, input) = (false, false);
            }
            if event::poll(POLL_EVERY)? {
                match event::read()? {
                    Event::Key(key) if key.kind != KeyEventKind::Release => {
                        if !self.key(key) {
                            return Ok(());
                        }
                        input = true;
                    }
                    Event::Resize(..) => input = true,
                    _ => {}
                }
            }
        }
    }

    fn index(&self) -> usize {
        Tab::ALL.iter().position(|t| *t == self.tab).unwrap_or(0)
    }

    /// Handle a key; false to quit.
    fn key(&mut self, key: KeyEvent) -> bool {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return false;
        }
        match self.mode {
            Mode::Filter => {
                match key.code {
                    KeyCode::Enter => self.mode = Mode::Table,
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Table;
                    }
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Char(c) => self.filter.push(c),
                    _ => {}
                }
                return true;
            }
            Mode::Help | Mode::Stack => match key.code {
                KeyCode::Char('q') => return false,
                KeyCode::Esc | KeyCode::Enter | KeyCode::Char('?') => {
                    self.mode = Mode::Table;
                    return true;
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    self.stack_scroll = self.stack_scroll.saturating_add(1);
                    return true;
                }
                KeyCode::Up | KeyCode::Char('k') => {
                    self.stack_scroll = self.stack_scroll.saturating_sub(1);
                    return true;
                }
                _ => return true,
            },
            Mode::Table => {}
        }
        let i = self.index();
        match key.code {
            KeyCode::Char('q') => return false,
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Char(c @ '1'..='4') => self.tab = Tab::ALL[c as usize - '1' as usize],
            KeyCode::Tab => self.tab = Tab::ALL[(i + 1) % Tab::ALL.len()],
            KeyCode::BackTab => self.tab = Tab::ALL[(i + Tab::ALL.len() - 1) % Tab::ALL.len()],
            KeyCode::Down | KeyCode::Char('j') => self.table[i].select_next(),
            KeyCode::Up | KeyCode::Char('k') => self.table[i].select_previous(),
            KeyCode::PageDown => self.table[i].scroll_down_by(10),
            KeyCode::PageUp => self.table[i].scroll_up_by(10),
            KeyCode::Home => self.table[i].select_first(),
            KeyCode::End => self.table[i].select_last(),
            KeyCode::Char('s') => {
                let columns = self.tab.columns().0.len();
                self.sort[i] = ((self.sort[i].0 + 1) % columns, false);
            }
            KeyCode::Char('S') => self.sort[i].1 = !self.sort[i].1,
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Char(' ') | KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Enter if self.tab == Tab::Stalls => {
                self.stack_scroll = 0;
                self.mode = Mode::Stack;
            }
            KeyCode::Left => {
                let kept = self.follower.timeline.kept.len();
                self.cursor = match self.cursor {
                    _ if kept == 0 => None,
                    None => Some(kept.saturating_sub(2)),
                    Some(c) => Some(c.saturating_sub(1)),
                };
            }
            KeyCode::Right => {
                let kept = self.follower.timeline.kept.len();
                self.cursor = self.cursor.map(|c| c + 1).filter(|c| *c < kept);
            }
            KeyCode::Char('L') => self.cursor = None,
            _ => {}
        }
        true
    }

    /// The moment shown: the snapshot at the cursor and the one before it, or the newest two.
    fn moment(&self) -> Option<Moment<'_>> {
        let t = &self.follower.timeline;
        match self.cursor {
            Some(c) => Some(Moment {
                now: t.kept.get(c)?,
                before: c.checked_sub(1).and_then(|b| t.kept.get(b)).map(|s| &**s),
            }),
            None => Some(Moment {
                now: t.latest.as_deref()?,
                before: t.previous.as_deref(),
            }),
        }
    }

    /// The current view's rows, sorted and filtered.
    fn rows(&mut self) -> Vec<view::Row> {
        let key = (
            self.tab,
            self.cursor,
            self.follower.bytes().0,
            self.follower.restarts,
            self.follower.parts,
        );
        if self.cache.as_ref().is_none_or(|(k, _)| *k != key) {
            let upto = self.cursor.and(self.moment()).map(|m| m.now.elapsed_ns);
            let rows = match (self.tab, self.moment()) {
                (Tab::Stalls, _) => view::stall_rows(self.follower.stalls.values(), upto),
                (_, None) => Vec::new(),
                (Tab::Tasks, Some(m)) => view::task_rows(&m),
                (Tab::Queues, Some(m)) => view::queue_rows(&m),
                (Tab::Workers, Some(m)) => view::worker_rows(&m),
            };
            self.cache = Some((key, rows));
        }
        let filter = self.filter.to_lowercase();
        let mut rows: Vec<view::Row> = self
            .cache
            .as_ref()
            .map(|(_, rows)| {
                rows.iter()
                    .filter(|r| r.matches(&filter))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let (column, reverse) = self.sort[self.index()];
        view::sort(&mut rows, column, reverse);
        rows
    }

    fn draw(&mut self, f: &mut Frame<'_>) {
        let [status, tabs, body, footer] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Length(1),
            Constraint::Fill(1),
            Constraint::Length(2),
        ])
        .areas(f.area());
        f.render_widget(Paragraph::new(self.status()), status);
        let titles = Tab::ALL
            .iter()
            .enumerate()
            .map(|(n, t)| format!("{} {}", n + 1, t.title()));
        f.render_widget(
            Tabs::new(titles)
                .select(self.index())
                .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
            tabs,
        );
        let rows = self.rows();
        self.draw_table(f, body, &rows);
        f.render_widget(Paragraph::new(self.footer()), footer);
        match self.mode {
            Mode::Stack => {
                let selected = self.table[self.index()]
                    .selected()
                    .and_then(|i| rows.get(i))
                    .and_then(|r| r.stall)
                    .and_then(|id| self.follower.stalls.get(&id));
                let text = match selected {
                    Some(stall) => stack_text(stall),
                    None => Text::from("No stall selected: select one with ↑ ↓, then Enter."),
                };
                overlay(
                    f,
                    " Stacks (Esc closes, ↑ ↓ scroll) ",
                    text,
                    self.stack_scroll,
                );
            }
            Mode::Help => {
                let lines: Vec<Line<'_>> = HELP
                    .iter()
                    .map(|(k, what)| {
                        Line::from(vec![
                            Span::styled(format!("{k:>30}  "), Style::new().bold()),
                            Span::raw(*what),
                        ])
                    })
                    .collect();
                overlay(f, " Keys (Esc closes) ", Text::from(lines), 0);
            }
            Mode::Table | Mode::Filter => {}
        }
    }

    fn draw_table(&mut self, f: &mut Frame<'_>, area: Rect, rows: &[view::Row]) {
        let i = self.index();
        let (columns, _) = self.tab.columns();
        let (sorted, reverse) = self.sort[i];
        let header = Row::new(columns.iter().enumerate().map(|(c, name)| {
            let mark = match (c == sorted, reverse) {
                (true, false) => "▼",
                (true, true) => "▲",
                _ => "",
            };
            Cell::from(format!("{name}{mark}"))
        }))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED));
        let natural: Vec<usize> = (0..columns.len())
            .map(|c| {
                rows.iter()
                    .map(|r| r.cells.get(c).map_or(0, |s| s.chars().count()))
                    .chain([columns[c].chars().count() + 1])
                    .max()
                    .unwrap_or(4)
            })
            .collect();
        // The highlight symbol and a space between columns.
        let room = usize::from(area.width).saturating_sub(2 + columns.len());
        let widths = fit(&natural, room, self.tab.location_column());
        let body = rows.iter().map(|r| {
            let row = Row::new(
                r.cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| Cell::from(tail(c, *w))),
            );
            if r.hot {
                row.style(Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
            } else {
                row
            }
        });
        let empty = match (self.tab, rows.is_empty()) {
            (_, true) if !self.filter.is_empty() => " no row matches the filter ",
            (Tab::Stalls, true) => " no stall yet ",
            (_, true) => " nothing recorded yet ",
            _ => "",
        };
        let table = Table::new(body, widths.iter().map(|w| Constraint::Length(*w as u16)))
            .header(header)
            .block(Block::new().title_bottom(empty))
            .row_highlight_style(Style::new().bg(Color::DarkGray))
            .highlight_symbol("▶ ");
        // Keep a row selected, within the rows shown (a filter may have shortened them).
        let last = rows.len().checked_sub(1);
        let selected = self.table[i].selected();
        self.table[i].select(last.map(|last| selected.unwrap_or(0).min(last)));
        f.render_stateful_widget(table, area, &mut self.table[i]);
    }

    fn status(&self) -> Text<'static> {
        let Some(h) = self.follower.header() else {
            let (complete, pending) = self.follower.bytes();
            return Text::from(vec![
                Line::from(format!(
                    "asyncprof top · {} · waiting for the run file's header ({} bytes read)",
                    self.follower.path().display(),
                    complete + pending as u64
                )),
                self.problem_line(),
            ]);
        };
        let writer = match self.follower.writer() {
            Writer::Recording => Span::styled("● recording", Style::new().fg(Color::Green)),
            Writer::Ended => Span::raw("■ ended"),
            Writer::Gone => Span::styled(
                "✖ process gone without ending its run (killed or crashed)",
                Style::new().fg(Color::Red),
            ),
            Writer::Unknown => Span::raw("? writer unknown"),
        };
        let workers = match h.workers {
            0 => String::new(),
            1 => ", 1 worker".into(),
            n => format!(", {n} workers"),
        };
        // A run split at its file size limit (ASYNCPROF_MAX_FILE_MB): which part is read now.
        let part = match h.part {
            0 => String::new(),
            n => format!(" · part {n}"),
        };
        let first = Line::from(vec![
            Span::styled("asyncprof top", Style::new().bold()),
            Span::raw(format!(
                " · {} (pid {}) · {} tier, {}{workers}{part} · ",
                h.program,
                h.pid,
                view::kebab(&h.tier),
                view::kebab(&h.flavor)
            )),
            writer,
        ]);
        let stalls = self.follower.stalls.values();
        let (mut count, mut running, mut longest) = (0, 0, 0);
        for s in stalls {
            count += 1;
            running += usize::from(s.ongoing);
            longest = longest.max(s.duration_ns);
        }
        // Watching a later part from its start, the parts before it are not read: the run's
        // own count (in every snapshot) says how many stalls it had in all.
        let in_run = self
            .follower
            .timeline
            .latest
            .as_ref()
            .and_then(|n| n.runtime.stalls)
            .map(|t| t.count)
            .filter(|&n| n > count as u64)
            .map_or(String::new(), |n| format!(", {n} in the whole run"));
        let mut second = vec![Span::raw(format!(
            "stalls {count} ({running} running, longest {}{in_run})",
            asyncprof_report::dur(longest)
        ))];
        if let Some(m) = self.moment() {
            let polls = m.now.runtime.polls
                - m.before
                    .map_or(0, |b| b.runtime.polls)
                    .min(m.now.runtime.polls);
            let secs = (m.now.elapsed_ns
                - m.before.map_or(0, |b| b.elapsed_ns).min(m.now.elapsed_ns))
                as f64
                / 1e9;
            second.push(Span::raw(format!(
                " · snapshot at {:.1}s: polls/s {:.0}, tasks alive {}",
                m.now.elapsed_ns as f64 / 1e9,
                polls as f64 / secs.max(1e-3),
                m.now.runtime.tasks_alive
            )));
        }
        if let Some(c) = self.cursor {
            second.push(Span::styled(
                format!(
                    " · snapshot {} of {} (← → step, L live)",
                    c + 1,
                    self.follower.timeline.kept.len()
                ),
                Style::new().fg(Color::Yellow),
            ));
        }
        if self.paused {
            second.push(Span::styled(
                " · PAUSED (space resumes)",
                Style::new().fg(Color::Yellow).bold(),
            ));
        }
        Text::from(vec![first, Line::from(second), self.problem_line()])
    }

    fn problem_line(&self) -> Line<'static> {
        match &self.follower.problem {
            Some(p) => Line::styled(
                format!("error: {p} (showing what was read before it)"),
                Style::new().fg(Color::Red).bold(),
            ),
            None => Line::raw(""),
        }
    }

    fn footer(&self) -> Text<'static> {
        let loss = self
            .moment()
            .map(|m| asyncprof_report::loss_counters(&m.now.loss))
            .map(|counters| {
                let lost: Vec<String> = counters
                    .iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, what)| format!("{n} {}", what.split(':').next().unwrap_or(what)))
                    .collect();
                if lost.is_empty() {
                    "loss: none".to_string()
                } else {
                    format!("loss: {}", lost.join("; "))
                }
            })
            .unwrap_or_default();
        let keys = if self.mode == Mode::Filter {
            format!("filter: {}▏ (Enter keeps, Esc clears)", self.filter)
        } else if !self.filter.is_empty() {
            format!("filter: {} · ? help · q quit", self.filter)
        } else {
            "? help · q quit · 1-4 views · s sort · / filter · Enter stacks · space pause · ← → time"
                .to_string()
        };
        Text::from(vec![
            Line::raw(loss),
            Line::styled(keys, Style::new().add_modifier(Modifier::REVERSED)),
        ])
    }
}

/// The widest a column gets; longer cells keep their end (a path's file and line).
const MAX_WIDTH: usize = 60;

/// Column widths: each as wide as its widest cell (at most [`MAX_WIDTH`]); when they do not
/// fit in `room`, the widest columns give way first, the location column (file:line) last.
fn fit(natural: &[usize], room: usize, keep: usize) -> Vec<usize> {
    let mut widths: Vec<usize> = natural.iter().map(|w| (*w).min(MAX_WIDTH)).collect();
    while widths.iter().sum::<usize>() > room {
        let widest = (0..widths.len())
            .filter(|c| *c != keep && widths[*c] > 4)
            .max_by_key(|c| widths[*c])
            .or((widths[keep] > 4).then_some(keep));
        match widest {
            Some(c) => widths[c] -= 1,
            None => break,
        }
    }
    widths
}

/// `text`, or `…` and its last `width - 1` characters when it is longer.
fn tail(text: &str, width: usize) -> String {
    let len = text.chars().count();
    if len <= width {
        return text.to_string();
    }
    let mut out = String::from("…");
    out.extend(text.chars().skip(len + 1 - width));
    out
}

/// The stacks of one stall, innermost frame first, the culprit and the call it made marked;
/// first the one the report shows (through the stall's line, taken in its code rather than as
/// a short system call returned), then the others in the record's order.
fn stack_text(s: &StallRecord) -> Text<'static> {
    let mut lines = vec![
        Line::styled(
            format!(
                "stall {} at {:.3}s, {} {} · {} · task {} on {} ({})",
                s.id,
                s.start_ns as f64 / 1e9,
                if s.ongoing { "running for" } else { "lasted" },
                asyncprof_report::dur(s.duration_ns),
                view::stall_kind(s),
                s.task_id,
                s.thread_name,
                s.tid
            ),
            Style::new().bold(),
        ),
        Line::raw(format!("culprit: {}", view::culprit(s))),
        Line::raw(""),
    ];
    if s.stacks.is_empty() {
        lines.push(Line::raw(
            "no stack was sampled for this stall (see the loss counters)",
        ));
    }
    let shown = asyncprof_report::shown_stack(s);
    let others = s
        .stacks
        .iter()
        .filter(|st| !shown.is_some_and(|f| std::ptr::eq(f, *st)));
    for stack in shown.into_iter().chain(others) {
        lines.push(Line::styled(
            format!(
                "{} sample{}:",
                stack.count,
                if stack.count == 1 { "" } else { "s" }
            ),
            Style::new().add_modifier(Modifier::UNDERLINED),
        ));
        for frame in &stack.frames {
            let (mark, style) = if s.culprit.as_ref() == Some(frame) {
                ("▶ ", Style::new().fg(Color::Red).bold())
            } else if s.primitive.as_ref() == Some(frame) {
                ("● ", Style::new().fg(Color::Yellow))
            } else {
                ("  ", Style::new())
            };
            lines.push(Line::styled(format!("{mark}{frame}"), style));
        }
        lines.push(Line::raw(""));
    }
    Text::from(lines)
}

fn overlay(f: &mut Frame<'_>, title: &'static str, text: Text<'static>, scroll: u16) {
    let area = f.area();
    let inner = Rect {
        x: area.x + area.width / 20,
        y: area.y + area.height / 10,
        width: area.width - area.width / 10,
        height: area.height - area.height / 5,
    };
    f.render_widget(Clear, inner);
    f.render_widget(
        Paragraph::new(text)
            .block(Block::bordered().title(title))
            .wrap(Wrap { trim: false })
            .scroll((scroll, 0)),
        inner,
    );
}

#[cfg(test)]
mod tests {
    use asyncprof_format::{Frame, StackSample, StallClass, StallRecord};

    fn frame(function: &str, line: u32) -> Frame {
        Frame::new(
            function,
            Some(format!("/app/src/{function}.rs")),
            Some(line),
        )
    }

    /// A stack of `count` samples, `in_a_call` of them staying in a call.
    fn stack(count: u32, in_a_call: u32, frames: Vec<Frame>) -> StackSample {
        let mut st = StackSample::default();
        st.count = count;
        st.in_a_call = Some(in_a_call);
        st.frames = frames;
        st
    }

    /// Known truth: a loop that hashes a block and writes it; three of its four samples came
    /// as the short `pwrite` returned (the record lists that stack first, by count), the stall's
    /// line is the hashing's. The stack view starts with the hashing's stack.
    #[test]
    fn a_stalls_stacks_start_with_the_one_through_its_line() {
        let write = stack(
            3,
            3,
            vec![
                Frame::new("pwrite", None, None),
                frame("std_fs_write_at", 5),
                frame("store", 14),
            ],
        );
        let hash = stack(
            1,
            0,
            vec![
                Frame::new("<core::hash::sip::Hasher>::write", None, None),
                frame("store", 12),
            ],
        );
        let mut s = StallRecord::default();
        s.class = StallClass::CpuBound;
        s.culprit = Some(frame("store", 12));
        s.stacks = vec![write, hash];
        let text: Vec<String> = super::stack_text(&s)
            .lines
            .iter()
            .map(|l| l.spans.iter().map(|sp| sp.content.as_ref()).collect())
            .collect();
        let first = text
            .iter()
            .position(|l| l.ends_with("sample:") || l.ends_with("samples:"));
        let first = first.expect("a stack header");
        assert_eq!(text[first], "1 sample:", "{text:#?}");
        assert!(text[first + 1].contains("sip::Hasher"), "{text:#?}");
        assert!(
            text.iter().any(|l| l == "3 samples:"),
            "both stacks listed: {text:#?}"
        );
    }
}
