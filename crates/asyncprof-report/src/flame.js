(function(){
  'use strict';
  var NS = 'http://www.w3.org/2000/svg', W = 1200, ROW = 17, widgets = {};
  function el(name, attrs){
    var e = document.createElementNS(NS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function hue(s){
    var h = 0;
    for (var i = 0; i < s.length; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) >>> 0;
    return 10 + h % 40;
  }
  function pct(v, of){ return (of > 0 ? v * 100 / of : 0).toFixed(1) + '%'; }
  // Frames in depth-first order (name, weight, depth) to arrays; x is the offset in weight
  // units from the left of the root, end the index after the frame's last descendant.
  function tree(flat){
    var n = flat.length / 3, t = {n: n, name: [], w: [], d: [], x: [], parent: [], end: []};
    var cursor = [0], open = [];
    for (var i = 0; i < n; i++){
      var d = flat[3 * i + 2];
      t.name.push(flat[3 * i]); t.w.push(flat[3 * i + 1]); t.d.push(d);
      while (open.length && t.d[open[open.length - 1]] >= d) t.end[open.pop()] = i;
      t.parent.push(open.length ? open[open.length - 1] : -1);
      t.x.push(cursor[d] || 0);
      cursor[d] = t.x[i] + t.w[i];
      cursor[d + 1] = t.x[i];
      open.push(i);
    }
    while (open.length) t.end[open.pop()] = n;
    return t;
  }
  function Flame(root){
    var data = JSON.parse(root.querySelector('script.flame-data').textContent);
    var names = data.names, lower = names.map(function(s){ return s.toLowerCase(); });
    var synthetic = {};
    data.synthetic.forEach(function(i){ synthetic[i] = true; });
    var trees = {folded: tree(data.folded), full: tree(data.full)};
    var input = root.querySelector('.flame-search'), share = root.querySelector('.flame-share');
    var info = root.querySelector('.flame-info'), all = root.querySelector('.flame-all');
    var svg = el('svg', {'class': 'chart flame', width: W, tabindex: '0', role: 'group',
      'font-family': 'monospace', 'font-size': '11',
      'aria-label': 'Flamegraph: click a frame or press Enter to zoom, arrows move, Escape resets'});
    root.querySelector('.flame-svg').appendChild(svg);
    var st = {view: 'folded', zoom: 0, cur: 0, term: ''}, matched = [], drawn = {};
    function T(){ return trees[st.view]; }
    function name(i){ return names[T().name[i]]; }
    function describe(i){
      var t = T();
      return name(i) + ' \u2014 ' + t.w[i] + ' ' + data.unit + ' (' + pct(t.w[i], t.w[0]) + ')';
    }
    function inZoom(i){ return i >= st.zoom && i < T().end[st.zoom]; }
    function fit(s, width){
      var room = Math.floor((width - 6) / 6.6);
      if (room < 3) return '';
      return s.length <= room ? s : s.slice(0, room - 1) + '\u2026';
    }
    function search(){
      var t = T(), term = st.term;
      matched = [];
      if (!term){ share.textContent = ''; return; }
      var count = 0, sum = 0, zsum = 0, i;
      for (i = 1; i < t.n; i++) if (lower[t.name[i]].indexOf(term) >= 0){ matched[i] = true; count++; }
      // A match inside a match adds nothing: count each matching subtree once.
      for (i = 1; i < t.n;){
        if (matched[i]){ sum += t.w[i]; if (inZoom(i)) zsum += t.w[i]; i = t.end[i]; } else i++;
      }
      for (i = t.parent[st.zoom]; i > 0; i = t.parent[i]) if (matched[i]) zsum = t.w[st.zoom];
      share.textContent = pct(sum, t.w[0]) + ' of ' + data.what + ' matched (' + count +
        (count === 1 ? ' frame' : ' frames') + ')' +
        (st.zoom > 0 ? '; ' + pct(zsum, t.w[st.zoom]) + ' of the zoomed frame' : '');
    }
    function draw(i, x, width){
      var t = T(), y = t.d[i] * ROW, s = name(i), nm = t.name[i];
      var cls = (matched[i] ? 'match ' : '') + (i === st.cur ? 'cur ' : '') + (i < st.zoom ? 'up' : '');
      var g = el('g', {'data-i': i, 'class': cls.trim()});
      var title = el('title', {});
      title.textContent = describe(i);
      var fill = matched[i] ? '#e040fb' : synthetic[nm] ? '#b8c4d6' : 'hsl(' + hue(s) + ',85%,62%)';
      g.appendChild(title);
      g.appendChild(el('rect', {x: x.toFixed(2), y: y, width: width.toFixed(2), height: 16,
        fill: fill, 'fill-opacity': i < st.zoom ? '0.55' : '1', stroke: 'white', 'stroke-width': '0.5'}));
      var text = el('text', {x: (x + 3).toFixed(2), y: y + 12});
      text.textContent = fit(s, width);
      g.appendChild(text);
      svg.appendChild(g);
      drawn[i] = true;
      return t.d[i] + 1;
    }
    function render(){
      var t = T(), z = st.zoom, zx = t.x[z], zw = t.w[z] || 1, rows = 1, a, i;
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      drawn = {};
      var up = [];
      for (a = t.parent[z]; a >= 0; a = t.parent[a]) up.unshift(a);
      up.forEach(function(a){ rows = Math.max(rows, draw(a, 0, W)); });
      for (i = z; i < t.end[z];){
        var width = t.w[i] / zw * W;
        if (width < 0.3){ i = t.end[i]; continue; }
        rows = Math.max(rows, draw(i, (t.x[i] - zx) / zw * W, width));
        i++;
      }
      var h = rows * ROW + 4;
      svg.setAttribute('viewBox', '0 0 ' + W + ' ' + h);
      svg.setAttribute('height', h);
    }
    function update(){ search(); render(); }
    function show(i){ info.textContent = describe(i); }
    function zoom(i){ st.zoom = i; st.cur = i; update(); show(i); }
    function reset(){
      st.zoom = 0; st.cur = 0; st.term = ''; input.value = '';
      update(); info.textContent = 'Reset: the whole graph, no search.';
    }
    function move(i){
      if (i >= 0 && drawn[i]){ st.cur = i; render(); show(i); }
    }
    svg.addEventListener('click', function(e){
      var g = e.target.closest && e.target.closest('g[data-i]');
      if (!g) return;
      zoom(+g.getAttribute('data-i'));
      svg.focus({preventScroll: true});
    });
    svg.addEventListener('mouseover', function(e){
      var g = e.target.closest && e.target.closest('g[data-i]');
      if (g) show(+g.getAttribute('data-i'));
    });
    svg.addEventListener('keydown', function(e){
      var t = T(), c = st.cur, j;
      switch (e.key){
        case 'Enter': case ' ': zoom(c); break;
        case 'Escape': reset(); break;
        case 'ArrowUp': move(t.parent[c]); break;
        case 'ArrowDown': move(c + 1 < t.end[c] ? c + 1 : -1); break;
        case 'ArrowRight': move(t.end[c] < t.n && t.d[t.end[c]] === t.d[c] ? t.end[c] : -1); break;
        case 'ArrowLeft':
          for (j = t.parent[c] + 1; j >= 1 && j < c && t.end[j] < c;) j = t.end[j];
          move(j >= 1 && j < c ? j : -1); break;
        default: return;
      }
      e.preventDefault();
    });
    root.addEventListener('keydown', function(e){
      if (e.key === '/' && e.target !== input){ e.preventDefault(); input.focus(); }
      else if (e.key === 'Escape' && e.target === input){ input.value = ''; st.term = ''; update(); }
    });
    input.addEventListener('input', function(){ st.term = input.value.trim().toLowerCase(); update(); });
    root.querySelector('.flame-reset').addEventListener('click', reset);
    if (all) all.addEventListener('change', function(){
      st.view = all.checked ? 'full' : 'folded'; st.zoom = 0; st.cur = 0; update();
    });
    update();
    return {root: root, svg: svg, input: input, all: all, share: share,
            reset: root.querySelector('.flame-reset')};
  }
  document.querySelectorAll('.flame').forEach(function(root){ widgets[root.id] = Flame(root); });
  var test = /^#flame-test=(.*)$/.exec(location.hash);
  if (!test) return;
  var out = [], w = null;
  function frameName(g){
    var s = g.querySelector('title').textContent;
    return s.slice(0, s.lastIndexOf(' \u2014 '));
  }
  test[1].split(';').forEach(function(step){
    var at = step.indexOf('='), verb = at < 0 ? step : step.slice(0, at);
    var arg = at < 0 ? '' : decodeURIComponent(step.slice(at + 1));
    if (verb === 'on') w = widgets[arg];
    else if (!w) out.push('no widget before ' + verb);
    else if (verb === 'click'){
      var hit = null;
      w.svg.querySelectorAll('g[data-i]').forEach(function(g){ if (!hit && frameName(g) === arg) hit = g; });
      if (hit) hit.querySelector('rect').dispatchEvent(new MouseEvent('click', {bubbles: true, cancelable: true}));
      else out.push('no drawn frame ' + arg);
    } else if (verb === 'search'){
      w.input.value = arg; w.input.dispatchEvent(new Event('input', {bubbles: true}));
    } else if (verb === 'key'){
      var target = document.activeElement;
      if (!w.root.contains(target)){ w.svg.focus(); target = w.svg; }
      target.dispatchEvent(new KeyboardEvent('keydown', {key: arg, bubbles: true, cancelable: true}));
    } else if (verb === 'all') w.all.click();
    else if (verb === 'reset') w.reset.click();
    else if (verb === 'scroll') w.root.parentNode.scrollIntoView();
    else if (verb === 'report'){
      var box = w.svg.getBoundingClientRect();
      var r = {full: [], names: [], widths: {}, matches: [], cur: null};
      w.svg.querySelectorAll('g[data-i]').forEach(function(g){
        var n = frameName(g), b = g.querySelector('rect').getBoundingClientRect();
        r.names.push(n);
        r.widths[n] = +(b.width / box.width).toFixed(4);
        if (b.width >= box.width * 0.995) r.full.push(n);
        if (g.classList.contains('match')) r.matches.push(n);
        if (g.classList.contains('cur')) r.cur = n;
      });
      r.share = w.share.textContent;
      r.focus = document.activeElement === w.input ? 'search' : document.activeElement === w.svg ? 'graph' : 'other';
      out.push(JSON.stringify(r));
    } else out.push('unknown step ' + verb);
  });
  var pre = document.createElement('pre');
  pre.id = 'flame-test';
  pre.textContent = out.join('\n');
  document.body.appendChild(pre);
})();
