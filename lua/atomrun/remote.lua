-- atomrun.remote -- the old name of atomrun.etcd (the recipes' side of etcd
-- names), kept so that scripts written against it go on working.
return require "atomrun.etcd"
