# Module-level cycles from cargo-modules' full item graph: every item collapsed into the module
# that holds it; "uses" edges between distinct modules.
import re,sys,collections
mods=set();g=collections.defaultdict(set);why=collections.defaultdict(list)
lines=open(sys.argv[1]).read().splitlines()
for l in lines:
    m=re.match(r'\s*"([^"]+)" \[label="[^|]*\|[^"]*"[^;]*; // "(\w+)" node',l)
    if m and m.group(2) in('mod','crate'): mods.add(m.group(1))
def mod_of(n):
    while n not in mods and '::' in n: n=n.rsplit('::',1)[0]
    return n
for l in lines:
    m=re.match(r'\s*"([^"]+)" -> "([^"]+)" \[label="uses"',l)
    if m:
        a,b=map(mod_of,m.groups())
        if a!=b: g[a].add(b); why[(a,b)].append(m.groups())
idx={};low={};st=[];on=set();res=[];i=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=i[0];i[0]+=1;st.append(v);on.add(v)
    for w in list(g[v]):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        c=[]
        while True:
            w=st.pop();on.discard(w);c.append(w)
            if w==v:break
        if len(c)>1: res.append(c)
for v in list(g):
    if v not in idx: sc(v)
for c in res:
    print(sorted(c))
    cs=set(c)
    for a in c:
        for b in g[a]:
            if b in cs: print("   ",a,"->",b, why[(a,b)][:2])
print(len(res),"cycles")
sys.exit(1 if res else 0)
