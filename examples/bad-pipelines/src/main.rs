//! `bad-pipelines`: lists the registered pipelines (`asyncprof bench` runs them).

fn main() {
    for name in bad_pipelines::PIPELINES {
        println!("{name}");
    }
}
