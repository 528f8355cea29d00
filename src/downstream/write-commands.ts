/** Redis commands flagged `write` (7.0 command table): refused with -READONLY, as a read-only replica does. */
export const WRITE_COMMANDS: ReadonlySet<string> = new Set(
  (
    'append bitfield bitop blmove blmpop blpop brpop brpoplpush bzmpop bzpopmax bzpopmin copy decr decrby del ' +
    'expire expireat flushall flushdb geoadd georadius georadiusbymember geosearchstore getdel getex getset hdel ' +
    'hincrby hincrbyfloat hmset hset hsetnx incr incrby incrbyfloat linsert lmove lmpop lpop lpush lpushx lrem lset ' +
    'ltrim migrate move mset msetnx persist pexpire pexpireat pfadd pfcount pfdebug pfmerge psetex rename renamenx ' +
    'restore restore-asking rpop rpoplpush rpush rpushx sadd sdiffstore set setbit setex setnx setrange sinterstore ' +
    'smove sort spop srem sunionstore swapdb unlink xack xadd xautoclaim xclaim xdel xgroup xsetid xtrim zadd ' +
    'zdiffstore zincrby zinterstore zmpop zpopmax zpopmin zrangestore zrem zremrangebylex zremrangebyrank ' +
    'zremrangebyscore zunionstore eval evalsha fcall function'
  ).split(' '),
);
