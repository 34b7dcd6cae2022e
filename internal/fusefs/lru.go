package fusefs

import (
	"container/list"
	"sync"
)

// lru is a cache of values that weigh at most max in all, least recently
// used out first. A value heavier than maxItem is not kept.
type lru[K comparable, V any] struct {
	mu      sync.Mutex
	max     int64
	maxItem int64
	used    int64
	weight  func(V) int64
	order   *list.List // front: most recent; of *lruItem
	items   map[K]*list.Element
}

type lruItem[K comparable, V any] struct {
	key K
	val V
	w   int64
}

func newLRU[K comparable, V any](max, maxItem int64, weight func(V) int64) *lru[K, V] {
	return &lru[K, V]{max: max, maxItem: maxItem, weight: weight, order: list.New(), items: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruItem[K, V]).val, true
}

func (c *lru[K, V]) put(k K, v V) {
	w := c.weight(v)
	if w > c.maxItem {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	c.items[k] = c.order.PushFront(&lruItem[K, V]{key: k, val: v, w: w})
	c.used += w
	for c.used > c.max {
		e := c.order.Back()
		it := e.Value.(*lruItem[K, V])
		c.order.Remove(e)
		delete(c.items, it.key)
		c.used -= it.w
	}
}
