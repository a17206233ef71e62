//! One hundred blocking calls, each at a line of its own, for the stall-memory bench: a service
//! whose stalls name 100 distinct lines. Each sleeps for its own extra nanoseconds so that no
//! two functions compile to the same code (and merge into one line).

use std::hint::black_box;
use std::time::Duration;

/// How long each call blocks its worker: past the default 10 ms stall threshold.
const STALL: Duration = Duration::from_millis(15);

#[inline(never)]
fn s00() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(0)));
}
#[inline(never)]
fn s01() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(1)));
}
#[inline(never)]
fn s02() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(2)));
}
#[inline(never)]
fn s03() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(3)));
}
#[inline(never)]
fn s04() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(4)));
}
#[inline(never)]
fn s05() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(5)));
}
#[inline(never)]
fn s06() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(6)));
}
#[inline(never)]
fn s07() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(7)));
}
#[inline(never)]
fn s08() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(8)));
}
#[inline(never)]
fn s09() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(9)));
}
#[inline(never)]
fn s10() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(10)));
}
#[inline(never)]
fn s11() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(11)));
}
#[inline(never)]
fn s12() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(12)));
}
#[inline(never)]
fn s13() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(13)));
}
#[inline(never)]
fn s14() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(14)));
}
#[inline(never)]
fn s15() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(15)));
}
#[inline(never)]
fn s16() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(16)));
}
#[inline(never)]
fn s17() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(17)));
}
#[inline(never)]
fn s18() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(18)));
}
#[inline(never)]
fn s19() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(19)));
}
#[inline(never)]
fn s20() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(20)));
}
#[inline(never)]
fn s21() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(21)));
}
#[inline(never)]
fn s22() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(22)));
}
#[inline(never)]
fn s23() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(23)));
}
#[inline(never)]
fn s24() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(24)));
}
#[inline(never)]
fn s25() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(25)));
}
#[inline(never)]
fn s26() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(26)));
}
#[inline(never)]
fn s27() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(27)));
}
#[inline(never)]
fn s28() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(28)));
}
#[inline(never)]
fn s29() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(29)));
}
#[inline(never)]
fn s30() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(30)));
}
#[inline(never)]
fn s31() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(31)));
}
#[inline(never)]
fn s32() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(32)));
}
#[inline(never)]
fn s33() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(33)));
}
#[inline(never)]
fn s34() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(34)));
}
#[inline(never)]
fn s35() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(35)));
}
#[inline(never)]
fn s36() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(36)));
}
#[inline(never)]
fn s37() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(37)));
}
#[inline(never)]
fn s38() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(38)));
}
#[inline(never)]
fn s39() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(39)));
}
#[inline(never)]
fn s40() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(40)));
}
#[inline(never)]
fn s41() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(41)));
}
#[inline(never)]
fn s42() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(42)));
}
#[inline(never)]
fn s43() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(43)));
}
#[inline(never)]
fn s44() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(44)));
}
#[inline(never)]
fn s45() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(45)));
}
#[inline(never)]
fn s46() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(46)));
}
#[inline(never)]
fn s47() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(47)));
}
#[inline(never)]
fn s48() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(48)));
}
#[inline(never)]
fn s49() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(49)));
}
#[inline(never)]
fn s50() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(50)));
}
#[inline(never)]
fn s51() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(51)));
}
#[inline(never)]
fn s52() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(52)));
}
#[inline(never)]
fn s53() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(53)));
}
#[inline(never)]
fn s54() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(54)));
}
#[inline(never)]
fn s55() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(55)));
}
#[inline(never)]
fn s56() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(56)));
}
#[inline(never)]
fn s57() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(57)));
}
#[inline(never)]
fn s58() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(58)));
}
#[inline(never)]
fn s59() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(59)));
}
#[inline(never)]
fn s60() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(60)));
}
#[inline(never)]
fn s61() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(61)));
}
#[inline(never)]
fn s62() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(62)));
}
#[inline(never)]
fn s63() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(63)));
}
#[inline(never)]
fn s64() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(64)));
}
#[inline(never)]
fn s65() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(65)));
}
#[inline(never)]
fn s66() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(66)));
}
#[inline(never)]
fn s67() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(67)));
}
#[inline(never)]
fn s68() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(68)));
}
#[inline(never)]
fn s69() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(69)));
}
#[inline(never)]
fn s70() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(70)));
}
#[inline(never)]
fn s71() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(71)));
}
#[inline(never)]
fn s72() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(72)));
}
#[inline(never)]
fn s73() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(73)));
}
#[inline(never)]
fn s74() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(74)));
}
#[inline(never)]
fn s75() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(75)));
}
#[inline(never)]
fn s76() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(76)));
}
#[inline(never)]
fn s77() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(77)));
}
#[inline(never)]
fn s78() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(78)));
}
#[inline(never)]
fn s79() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(79)));
}
#[inline(never)]
fn s80() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(80)));
}
#[inline(never)]
fn s81() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(81)));
}
#[inline(never)]
fn s82() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(82)));
}
#[inline(never)]
fn s83() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(83)));
}
#[inline(never)]
fn s84() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(84)));
}
#[inline(never)]
fn s85() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(85)));
}
#[inline(never)]
fn s86() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(86)));
}
#[inline(never)]
fn s87() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(87)));
}
#[inline(never)]
fn s88() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(88)));
}
#[inline(never)]
fn s89() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(89)));
}
#[inline(never)]
fn s90() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(90)));
}
#[inline(never)]
fn s91() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(91)));
}
#[inline(never)]
fn s92() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(92)));
}
#[inline(never)]
fn s93() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(93)));
}
#[inline(never)]
fn s94() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(94)));
}
#[inline(never)]
fn s95() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(95)));
}
#[inline(never)]
fn s96() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(96)));
}
#[inline(never)]
fn s97() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(97)));
}
#[inline(never)]
fn s98() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(98)));
}
#[inline(never)]
fn s99() {
    std::thread::sleep(black_box(STALL + Duration::from_nanos(99)));
}

/// The calls, in line order.
pub(crate) const STALLS: [fn(); 100] = [
    s00, s01, s02, s03, s04, s05, s06, s07, s08, s09, s10, s11, s12, s13, s14, s15, s16, s17, s18,
    s19, s20, s21, s22, s23, s24, s25, s26, s27, s28, s29, s30, s31, s32, s33, s34, s35, s36, s37,
    s38, s39, s40, s41, s42, s43, s44, s45, s46, s47, s48, s49, s50, s51, s52, s53, s54, s55, s56,
    s57, s58, s59, s60, s61, s62, s63, s64, s65, s66, s67, s68, s69, s70, s71, s72, s73, s74, s75,
    s76, s77, s78, s79, s80, s81, s82, s83, s84, s85, s86, s87, s88, s89, s90, s91, s92, s93, s94,
    s95, s96, s97, s98, s99,
];
